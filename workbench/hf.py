"""Hugging Face ``transformers`` models in the workbench, offline.

- :func:`resnet18`, :func:`mobilenet_v2`, :func:`bert_encoder`: the architectures people ship
  (ResNet-18 as torchvision's, MobileNetV2, a BERT-style encoder), built from configs with random
  initialisation: no download, no hub access;
- :func:`load_hf_directory`: a local model directory (``config.json``, ``model.safetensors``, a
  tokenizer) loaded with the hub switched off; a missing file is a one-line :class:`DatasetError`,
  and pickled ``pytorch_model.bin`` weights are refused (they would be unpickled);
- :func:`read_text_lines` / :func:`tokenize`: the small text format (UTF-8, one sentence per line)
  for calibration and label-free evaluation;
- :func:`label_free_task`: a task whose targets are the float model's own outputs and whose
  metric is their cosine similarity, so any model can be scored without labels.

Every model is wrapped in :class:`OutputOf` so it takes one tensor (pixels or token ids) and
returns one tensor (logits or the pooled embedding), as the rest of the workbench expects.
``transformers`` is imported on use: ``import workbench`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DatasetError, TaskError

WEIGHT_FILES = ("model.safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class OutputOf(nn.Module):
    """``forward(x) = model(**{input_name: x}).<output>``: one tensor in, one tensor out."""

    def __init__(self, model: nn.Module, input_name: str = "pixel_values", output: str = "logits"):
        super().__init__()
        self.model, self.input_name, self.output = model, input_name, output

    def forward(self, x):
        out = self.model(**{self.input_name: x})
        return getattr(out, self.output) if hasattr(out, self.output) else out[0]


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


def load_hf_directory(path: str | os.PathLike, task: str = "sequence-classification"):
    """``(model, tokenizer)`` from a local directory saved by ``save_pretrained``, with no network.

    ``task``: ``sequence-classification`` (logits out) or ``encoder`` (the pooled embedding out).
    Weights must be safetensors; the tokenizer is ``tokenizer.json`` or ``vocab.txt``.
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
    if task not in ("sequence-classification", "encoder"):
        raise TaskError(f"task {task!r}; expected 'sequence-classification' or 'encoder'")
    cls, output = (tf.AutoModelForSequenceClassification, "logits") if task == "sequence-classification" else (tf.AutoModel, "pooler_output")
    from transformers.utils import logging as tf_logging

    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()  # its "Loading weights" bar is noise in notebooks and logs
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, attn_implementation="eager")
        tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{path.name}: transformers cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    finally:
        if bars:
            tf_logging.enable_progress_bar()
    return OutputOf(model.eval(), "input_ids", output).eval(), tokenizer


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


def tokenize(tokenizer, sentences: list[str], max_length: int = 32) -> torch.Tensor:
    """Token ids ``(N, max_length)`` (int64), padded and truncated to one fixed length."""
    if not sentences:
        raise DatasetError("no sentences to tokenize; expected at least one")
    enc = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"].to(torch.int64)


def cosine(outputs: torch.Tensor, targets: torch.Tensor, inputs=None) -> float:
    """Mean cosine similarity of each output to its target (here: the float model's output)."""
    return float(F.cosine_similarity(outputs.flatten(1).double(), targets.flatten(1).double(), dim=1).mean())


def label_free_task(model: nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, *, name: str = "custom", source: str = "user data"):
    """A task scored without labels: targets are ``model``'s own float outputs on ``eval_x``,
    the metric their cosine similarity (1.0 for the float model). Inputs of the wrong shape or
    type for the model raise :class:`TaskError` naming what it got."""
    from .tasks import make_task

    model = model.eval()
    try:
        with torch.no_grad():
            targets = torch.cat([model(eval_x[i : i + 64]) for i in range(0, len(eval_x), 64)])
            model(calib_x[:1])
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise TaskError(f"{name}: the model rejects inputs of shape {tuple(eval_x.shape[1:])} and type {str(eval_x.dtype).removeprefix('torch.')} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    task = make_task(model, calib_x, (eval_x, targets), metric=_cosine_metric(), name=name, kind="classification", source=source)
    task.description = f"{name}: label-free (cosine similarity of outputs to the float model's)"
    return task


def synthetic_task(name: str, model_fn, input_shape: tuple, *, tokens: int | None = None, n_calib: int = 128, n_eval: int = 128,
                   seed: int = 0, description: str = ""):
    """A registered, label-free task on seeded synthetic inputs (images, or token ids below
    ``tokens``); its targets (the float model's outputs) are computed when the data is first used."""
    from .data import Split, TaskData
    from .tasks import Task

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
