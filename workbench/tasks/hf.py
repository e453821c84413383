"""Hugging Face ``transformers`` models in the workbench, offline.

- :func:`resnet18`, :func:`mobilenet_v2`, :func:`bert_encoder`: the architectures people ship
  (ResNet-18 as torchvision's, MobileNetV2, a BERT-style encoder), built from configs with random
  initialisation: no download, no hub access;
- :func:`load_hf_directory`: a local model directory (``config.json``, ``model.safetensors``, a
  tokenizer) loaded with the hub switched off, as the kind its config's ``architectures`` names
  (sequence classification, a bare encoder, or a sentence-transformers ``sentence-embedding``);
  weights are never invented (a missing head is a :class:`MissingWeightsError` unless
  ``new_head=True``); a missing file is a one-line :class:`DatasetError`, and pickled
  ``pytorch_model.bin`` weights are refused (they would be unpickled);
- :func:`read_text_lines` / :func:`tokenize`: the small text format (UTF-8, one sentence per line)
  for calibration and label-free evaluation, tokenized to ids and attention mask ``(N, 2, L)``;
- :func:`label_free_task`: a task whose targets are the float model's own outputs and whose
  metric is their cosine similarity, so any model can be scored without labels (an embedding
  model's task is of kind ``embedding``: agreement is the pairwise-similarity ranking kept).

Every model is wrapped in :class:`OutputOf` (or :class:`SentenceEmbedding`) so it takes one
tensor (pixels, token ids, or ids and mask stacked) and returns one tensor (logits or an
embedding), as the rest of the workbench expects.
``transformers`` is imported on use: ``import workbench`` stays fast.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..infra.errors import DatasetError, MissingWeightsError, TaskError

WEIGHT_FILES = ("model.safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class TruncationWarning(UserWarning):
    """Text lines were longer than the token limit (``max_length`` or the model's position limit)
    and were cut."""


def split_ids_and_mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(ids, mask)`` of a token tensor: ``(N, 2, L)`` holds ids and attention mask (as
    :func:`tokenize` writes them), ``(N, L)`` ids alone (mask None: every position attended)."""
    if x.dim() == 3 and x.shape[1] == 2:
        return x[:, 0], x[:, 1]
    return x, None


class OutputOf(nn.Module):
    """``forward(x) = model(**{input_name: x}).<output>``: one tensor in, one tensor out.

    For ``input_ids``, ``x`` is ``(N, L)`` token ids or ``(N, 2, L)`` ids and attention mask
    (:func:`tokenize`'s layout: the mask travels in the one input tensor, through tasks and ONNX).
    ``output_kind`` says what comes out: ``"logits"`` or ``"embedding"``."""

    def __init__(self, model: nn.Module, input_name: str = "pixel_values", output: str = "logits", output_kind: str | None = None):
        super().__init__()
        self.model, self.input_name, self.output = model, input_name, output
        self.output_kind = output_kind or ("logits" if output == "logits" else "embedding")

    def forward(self, x):
        if self.input_name == "input_ids":
            ids, mask = split_ids_and_mask(x)
            out = self.model(input_ids=ids, attention_mask=mask)
        else:
            out = self.model(**{self.input_name: x})
        return getattr(out, self.output) if hasattr(out, self.output) else out[0]


class SentenceEmbedding(nn.Module):
    """A sentence embedding as sentence-transformers computes it: the encoder's last hidden state
    pooled over the tokens the attention mask keeps (``"mean"``) or the first token (``"cls"``),
    then L2-normalised when ``normalize``. ``x``: ``(N, 2, L)`` ids and mask, or ``(N, L)`` ids."""

    output_kind = "embedding"

    def __init__(self, model: nn.Module, pooling: str = "mean", normalize: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise TaskError(f"pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        self.model, self.pooling, self.normalize = model, pooling, bool(normalize)

    def forward(self, x):
        ids, mask = split_ids_and_mask(x)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            emb = hidden[:, 0]
        elif mask is None:
            emb = hidden.mean(1)
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(emb, p=2.0, dim=-1) if self.normalize else emb


POOLINGS = ("mean", "cls")


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - a dependency of the workbench
        raise TaskError(f"Hugging Face models need the transformers package ({exc})") from None
    transformers.logging.set_verbosity_error()
    return transformers


def _torchvision_init(model: nn.Module, seed: int) -> nn.Module:
    """Initialise as torchvision does (Kaiming-normal convolutions, unit BatchNorm, small linear
    weights): transformers' default for MobileNetV2 makes activations vanish with depth."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.01)
                m.bias.zero_()
    return model


def _settle_batchnorm(model: nn.Module, input_shape: tuple, seed: int, batches: int = 4, batch_size: int = 16) -> nn.Module:
    """Give random-init BatchNorm layers the running statistics of real activations (a few
    forward passes in training mode on seeded inputs), so the untrained model's activations look
    like a trained model's, as quantisation sees them."""
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((batch_size, *input_shape), generator=gen))
    return model.eval()


def resnet18(num_labels: int = 10, image_size: int = 224, seed: int = 0) -> nn.Module:
    """ResNet-18 (basic blocks 2-2-2-2, widths 64-512, 11.2 M parameters at 1000 classes), random init."""
    tf = _transformers()
    torch.manual_seed(seed)
    cfg = tf.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64, num_labels=num_labels)
    model = OutputOf(_torchvision_init(tf.ResNetForImageClassification(cfg), seed), "pixel_values", "logits")
    return _settle_batchnorm(model, (3, image_size, image_size), seed)


def mobilenet_v2(num_labels: int = 10, image_size: int = 224, seed: int = 0) -> nn.Module:
    """MobileNetV2 (width 1.0, inverted residuals, depthwise convolutions), random init."""
    tf = _transformers()
    torch.manual_seed(seed)
    cfg = tf.MobileNetV2Config(num_labels=num_labels, image_size=image_size)
    model = OutputOf(_torchvision_init(tf.MobileNetV2ForImageClassification(cfg), seed), "pixel_values", "logits")
    return _settle_batchnorm(model, (3, image_size, image_size), seed)


def bert_encoder(layers: int = 6, hidden: int = 128, heads: int = 4, intermediate: int = 512, vocab_size: int = 1000,
                 max_positions: int = 128, num_labels: int = 4, seed: int = 0) -> nn.Module:
    """A BERT-style encoder with a sequence-classification head (6 layers: 38 Linear layers), random init."""
    tf = _transformers()
    torch.manual_seed(seed)
    cfg = tf.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=max_positions, num_labels=num_labels,
                        attn_implementation="eager", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return OutputOf(tf.BertForSequenceClassification(cfg).eval(), "input_ids", "logits").eval()


KINDS = ("sequence-classification", "encoder", "sentence-embedding")


def default_kind(path: str | os.PathLike, architectures) -> str:
    """The kind a directory's own config says: ``*ForSequenceClassification`` is
    ``sequence-classification``; a bare encoder (``BertModel``, ...) is ``sentence-embedding``
    when the directory holds a sentence-transformers pooling config (``modules.json`` or
    ``1_Pooling/``), else ``encoder``. Anything else has no default: pass ``kind``."""
    path = Path(path)
    archs = list(architectures or [])
    if len(archs) == 1 and archs[0].endswith("ForSequenceClassification"):
        return "sequence-classification"
    if len(archs) == 1 and archs[0].endswith("Model") and "For" not in archs[0]:
        return "sentence-embedding" if (path / "modules.json").is_file() or (path / "1_Pooling").is_dir() else "encoder"
    said = ", ".join(archs) if archs else "no architectures"
    raise TaskError(f"{path.name}: config.json names {said}; no default kind for it; expected kind= one of {', '.join(KINDS)}")


def pooling_config(path: str | os.PathLike) -> tuple[str, bool]:
    """``(pooling, normalize)`` of a sentence-transformers directory: the ``Pooling`` module's
    ``config.json`` (``1_Pooling/`` unless ``modules.json`` names another folder) says mean or CLS;
    a ``Normalize`` module in ``modules.json`` says L2 normalisation. Without either file: mean
    pooling, no normalisation. A module or pooling mode the workbench does not compute (Dense,
    max pooling, ...) is a :class:`TaskError`, never skipped."""
    path = Path(path)
    modules, pool_dir = [], path / "1_Pooling"
    if (path / "modules.json").is_file():
        try:
            modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
            types = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path.name}/modules.json is not a sentence-transformers module list ({type(exc).__name__}); "
                               "expected a JSON list of {{idx, name, path, type}}") from None
        other = [t for t in types if t not in ("Transformer", "Pooling", "Normalize")]
        if other:
            raise TaskError(f"{path.name}/modules.json has module(s) {', '.join(other)} the workbench does not compute; "
                            "expected Transformer, Pooling and optionally Normalize")
        pool_dir = next((path / m.get("path", "") for m, t in zip(modules, types) if t == "Pooling"), pool_dir)
        normalize = "Normalize" in types
    else:
        normalize = False
    pooling = "mean"
    if (pool_dir / "config.json").is_file():
        try:
            cfg = json.loads((pool_dir / "config.json").read_text(encoding="utf-8"))
            modes = sorted(k.removeprefix("pooling_mode_") for k, v in cfg.items() if k.startswith("pooling_mode") and v is True)
        except (ValueError, AttributeError) as exc:
            raise DatasetError(f"{pool_dir.name}/config.json is not a pooling config ({type(exc).__name__}); expected JSON with pooling_mode_* flags") from None
        if modes not in (["mean_tokens"], ["cls_token"]):
            raise TaskError(f"{pool_dir.name}/config.json asks for pooling {', '.join(modes) or 'none'}; expected exactly one of "
                            "pooling_mode_mean_tokens, pooling_mode_cls_token")
        pooling = "mean" if modes == ["mean_tokens"] else "cls"
    return pooling, normalize


def load_hf_directory(path: str | os.PathLike, kind: str | None = None, *, new_head: bool = False, task: str | None = None):
    """``(model, tokenizer)`` from a local directory saved by ``save_pretrained``, with no network.

    ``kind``:

    - ``sequence-classification``: logits out (``AutoModelForSequenceClassification``);
    - ``encoder``: the bare encoder's pooled output (``pooler_output``, an embedding);
    - ``sentence-embedding``: the last hidden state pooled as the directory's sentence-transformers
      config says (:func:`pooling_config`: mean over the attention mask by default, or CLS; L2
      normalised when a ``Normalize`` module is listed), as a :class:`SentenceEmbedding`.

    Left None, ``kind`` follows ``config.json``'s ``architectures`` (:func:`default_kind`).
    Weights are never invented: a checkpoint without weights the kind needs (a classification
    head on a bare encoder, say) is a one-line :class:`MissingWeightsError` unless
    ``new_head=True`` asks for a fresh head (seeded, untrained: its logits mean nothing until
    trained); missing encoder weights are an error either way. A tokenizer with more tokens than
    the model's embedding rows is a :class:`TaskError`. The tokenizer's ``model_max_length`` is
    capped at the model's position limit, so :func:`tokenize` truncates to it (and says so).
    Weights must be safetensors; the tokenizer is ``tokenizer.json`` or ``vocab.txt``.
    ``task`` is the old name of ``kind``.
    """
    tf = _transformers()
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"model directory {str(path)!r} does not exist")
    found = sorted(p.name for p in path.iterdir())
    expected = "expected config.json, model.safetensors and a tokenizer (tokenizer.json or vocab.txt)"
    if not (path / "config.json").is_file():
        raise DatasetError(f"{path.name}: no config.json (found {', '.join(found) or 'nothing'}); {expected}")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        pickled = [f for f in found if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        why = f"{', '.join(pickled)} would be unpickled, which the workbench never does; convert to safetensors" if pickled else "no weights"
        raise DatasetError(f"{path.name}: no model.safetensors ({why}); {expected}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise DatasetError(f"{path.name}: no tokenizer (found {', '.join(found)}); {expected}")
    kind = kind if kind is not None else task
    try:
        config = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{path.name}: transformers cannot read config.json ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if kind is None:
        kind = default_kind(path, getattr(config, "architectures", None))
    if kind not in KINDS:
        raise TaskError(f"kind {kind!r}; expected one of {', '.join(KINDS)}")
    pooling = pooling_config(path) if kind == "sentence-embedding" else None
    cls = tf.AutoModelForSequenceClassification if kind == "sequence-classification" else tf.AutoModel
    from transformers.utils import logging as tf_logging

    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()  # its "Loading weights" bar is noise in notebooks and logs
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # what transformers initialises (a head asked for with new_head=True) is seeded
            model, info = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, attn_implementation="eager",
                                              output_loading_info=True)
        tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{path.name}: transformers cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    finally:
        if bars:
            tf_logging.enable_progress_bar()
    _check_missing(path, kind, model, sorted(info.get("missing_keys") or ()), new_head)
    _check_vocabulary(path, model, tokenizer)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0 and (tokenizer.model_max_length or 0) > limit:
        tokenizer.model_max_length = limit
    model = model.eval()
    if kind == "sequence-classification":
        return OutputOf(model, "input_ids", "logits").eval(), tokenizer
    if kind == "encoder":
        return OutputOf(model, "input_ids", "pooler_output", output_kind="embedding").eval(), tokenizer
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # sentence embeddings pool the hidden states themselves: its Linear would be quantised for nothing
    return SentenceEmbedding(model, *pooling).eval(), tokenizer


def _check_missing(path: Path, kind: str, model: nn.Module, missing: list[str], new_head: bool) -> None:
    """Refuse weights transformers would initialise at random (its own warning is muted)."""
    if kind == "sentence-embedding":
        missing = [k for k in missing if not k.startswith("pooler.")]  # the pooler is dropped, never used
    if not missing:
        return
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    base = model is getattr(model, "base_model", model)
    head = [] if base else [k for k in missing if not k.startswith(prefix)]
    body = [k for k in missing if k not in head]
    shown = lambda keys: ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    archs = ", ".join(getattr(model.config, "architectures", None) or ["no architectures"])
    if body:
        hint = "; for a sentence-transformers encoder use kind='sentence-embedding'" if kind == "encoder" and all(k.startswith("pooler.") for k in body) else ""
        raise MissingWeightsError(f"{path.name}: model.safetensors ({archs}) lacks {len(body)} weight(s) kind {kind!r} needs ({shown(body)}); "
                                  f"expected a checkpoint holding them{hint}")
    if not new_head:
        own = _default_kind_or_none(path, model.config)
        fits = f"kind={own!r} for this checkpoint" if own not in (None, kind) else "a checkpoint holding the head"
        raise MissingWeightsError(f"{path.name}: model.safetensors ({archs}) has no {kind} head ({shown(head)}); it would be random; "
                                  f"expected {fits}, or new_head=True to ask for an untrained head")
    warnings.warn(f"{path.name}: a new, untrained {kind} head ({shown(head)}), as asked (new_head=True): its outputs mean nothing until trained",
                  stacklevel=3)


def _default_kind_or_none(path: Path, config) -> str | None:
    try:
        return default_kind(path, getattr(config, "architectures", None))
    except TaskError:
        return None


def _check_vocabulary(path: Path, model: nn.Module, tokenizer) -> None:
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise TaskError(f"{path.name}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has {rows} rows; "
                        f"expected a tokenizer of at most {rows} tokens (the one saved with this model)")


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """Sentences of a UTF-8 text file, one per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"text file {str(path)!r} does not exist; expected UTF-8 text, one sentence per line")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path.name} is not UTF-8 text (byte {exc.start}); expected UTF-8, one sentence per line") from None
    lines = [line for line in lines if line]
    if not lines:
        raise DatasetError(f"{path.name} holds no sentence; expected UTF-8 text, one sentence per line")
    return lines


def tokenize(tokenizer, sentences: list[str], max_length: int = 32, attention_mask: bool = True) -> torch.Tensor:
    """Token ids and attention mask ``(N, 2, L)`` (int64; ``[:, 0]`` ids, ``[:, 1]`` mask), padded
    and truncated to one fixed length ``L``; ``attention_mask=False`` gives the ids alone ``(N, L)``.

    ``L`` is ``max_length``, capped at the tokenizer's ``model_max_length`` (the model's position
    limit, as :func:`load_hf_directory` sets it). Lines longer than ``L`` tokens are truncated and
    a :class:`TruncationWarning` says how many."""
    if not sentences:
        raise DatasetError("no sentences to tokenize; expected at least one")
    sentences = list(sentences)
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < max_length:
        warnings.warn(f"max_length {max_length} is over the model's position limit of {limit} tokens; using {limit}", TruncationWarning, stacklevel=2)
        max_length = limit
    full = tokenizer(sentences, truncation=False)["input_ids"]
    lengths = [len(ids) for ids in full]
    unk, special = getattr(tokenizer, "unk_token_id", None), set(getattr(tokenizer, "all_special_ids", ()) or ()) - {getattr(tokenizer, "unk_token_id", None)}
    words = [t for ids in full for t in ids if t not in special]
    if unk is not None and words and sum(t == unk for t in words) > len(words) / 2:
        warnings.warn(f"the tokenizer maps {sum(t == unk for t in words)} of {len(words)} tokens to its unknown token; "
                      "its vocabulary does not cover this text (or it was built without its vocabulary file)", TruncationWarning, stacklevel=2)
    cut = sum(n > max_length for n in lengths)
    if cut:
        warnings.warn(f"{cut} of {len(sentences)} lines are longer than {max_length} tokens (longest {max(lengths)}) and were truncated",
                      TruncationWarning, stacklevel=2)
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    ids = enc["input_ids"].to(torch.int64)
    if not attention_mask:
        return ids
    return torch.stack([ids, enc["attention_mask"].to(torch.int64)], dim=1)


def cosine(outputs: torch.Tensor, targets: torch.Tensor, inputs=None) -> float:
    """Mean cosine similarity of each output to its target (here: the float model's output)."""
    return float(F.cosine_similarity(outputs.flatten(1).double(), targets.flatten(1).double(), dim=1).mean())


def label_free_task(model: nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, *, name: str = "custom", source: str = "user data",
                    output_kind: str | None = None):
    """A task scored without labels: targets are ``model``'s own float outputs on ``eval_x``,
    the metric their cosine similarity (1.0 for the float model). Inputs of the wrong shape or
    type for the model raise :class:`TaskError` naming what it got.

    ``output_kind`` (default: the model's ``output_kind`` attribute, else ``"logits"``):
    ``"logits"`` makes a ``classification`` task (agreement: top-1 of the logits);
    ``"embedding"`` an ``embedding`` task (agreement: Spearman correlation of the pairwise
    similarities, :func:`workbench.tasks.metrics.similarity_spearman`; never an argmax over dimensions)."""
    from .registry import make_task

    output_kind = output_kind or getattr(model, "output_kind", "logits")
    if output_kind not in ("logits", "embedding"):
        raise TaskError(f"output_kind {output_kind!r}; expected 'logits' or 'embedding'")
    model = model.eval()
    try:
        with torch.no_grad():
            targets = torch.cat([model(eval_x[i : i + 64]) for i in range(0, len(eval_x), 64)])
            model(calib_x[:1])
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise TaskError(f"{name}: the model rejects inputs of shape {tuple(eval_x.shape[1:])} and type {str(eval_x.dtype).removeprefix('torch.')} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    kind = "embedding" if output_kind == "embedding" else "classification"
    task = make_task(model, calib_x, (eval_x, targets), metric=_cosine_metric(), name=name, kind=kind, source=source)
    what = "embeddings: cosine to the float embeddings; agreement: pairwise-similarity ranking (Spearman)" if kind == "embedding" else \
        "cosine similarity of outputs to the float model's"
    task.description = f"{name}: label-free ({what})"
    return task


def synthetic_task(name: str, model_fn, input_shape: tuple, *, tokens: int | None = None, n_calib: int = 128, n_eval: int = 128,
                   seed: int = 0, description: str = ""):
    """A registered, label-free task on seeded synthetic inputs (images, or token ids below
    ``tokens``); its targets (the float model's outputs) are computed when the data is first used."""
    from .data import Split, TaskData
    from .registry import Task

    def data() -> TaskData:
        gen = torch.Generator().manual_seed(seed)
        n = n_calib + n_eval
        x = (torch.randint(1, tokens, (n, *input_shape), generator=gen) if tokens else torch.randn((n, *input_shape), generator=gen))
        with torch.no_grad():
            model = model_fn().eval()
            targets = torch.cat([model(x[n_calib + i : n_calib + i + 64]) for i in range(0, n_eval, 64)])
        calib = Split(x[:n_calib])
        return TaskData(calib, calib, Split(x[n_calib:], targets), source=f"synthetic {'token ids' if tokens else 'images'} (seeded)", synthetic=True)

    return Task(name=name, model_factory=model_fn, data_factory=data, metric=_cosine_metric(), kind="classification", input_shape=tuple(input_shape),
                data_source=f"synthetic {'token ids' if tokens else 'images'} (seeded); label-free: cosine to the float outputs", synthetic=True,
                description=description, pretrained=True, seed=seed, input_dtype=torch.int64 if tokens else torch.float32)


def _cosine_metric():
    from .metrics import Metric

    return Metric("cosine", cosine)
