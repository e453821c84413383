"""``hf-minilm-embed``: a MiniLM-size sentence encoder, built offline, on a text set that ships.

- :data:`TEXT`: about 320 short English sentences written for the workbench (weather, cooking,
  travel, computing, sport, science, animals, work, music, health, history, home, school, money,
  transport, art, questions, nature), one a line, in the package; :func:`split_sentences` takes
  every other line for calibration and the rest for evaluation, so both splits cover every topic;
- :data:`VOCAB`: a BERT WordPiece vocabulary made from that text by :func:`build_vocab` (the five
  special tokens, every character and its ``##`` continuation, then the text's whole words by
  frequency), loaded with transformers' ``BertTokenizerFast``: the vocabulary is the shipped
  text's own (about 1,360 tokens), and any other lower-case ASCII word still tokenises, character
  by character;
- :func:`minilm_encoder`: transformers ``BertModel`` with all-MiniLM-L6-v2's shape (6 layers,
  hidden 384, 12 heads, intermediate 1536; no pooler) as a :class:`~workbench.tasks.hf.SentenceEmbedding`
  (mean pooling over the attention mask, L2-normalised), its random weights settled by
  :func:`settle_encoder` so that sentences get distinct embeddings and activations look like a
  trained encoder's (see there); built once per process and shape, then copied.

Everything is seeded and computed without data-dependent steps, so two builds are equal bit for
bit, in any process, under any thread count.
"""

from __future__ import annotations

import copy
import functools
import math
import string
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ..infra.errors import TaskError

TEXT = Path(__file__).resolve().parent / "texts" / "sentences.txt"
VOCAB = Path(__file__).resolve().parent / "texts" / "vocab.txt"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GELU_MEAN = 0.28209479177387814  # E[gelu(z)] for z ~ N(0, 1): 1 / (2 sqrt(pi))


def sentences(path: str | Path = TEXT) -> list[str]:
    """The shipped sentences (or another one-sentence-a-line UTF-8 file's), in file order."""
    from .hf import read_text_lines

    return read_text_lines(path)


def split_sentences(lines: list[str]) -> tuple[list[str], list[str]]:
    """``(calibration, evaluation)``: even lines and odd lines (deterministic; the shipped text
    is grouped by topic, so both halves see every topic)."""
    return list(lines[0::2]), list(lines[1::2])


def _words(lines: list[str]) -> list[str]:
    """The words BERT's own normaliser and pre-tokeniser see (lower case, accents stripped,
    punctuation split off)."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    return [w for line in lines for w, _ in pre.pre_tokenize_str(norm.normalize_str(line))]


def build_vocab(lines: list[str]) -> list[str]:
    """A WordPiece vocabulary of ``lines``, deterministic: the special tokens; every lower-case
    ASCII letter, digit and punctuation mark (and any other character the text holds), each also
    as a ``##`` continuation piece; then every whole word of the text, most frequent first (ties
    alphabetical). Unknown words fall back to characters, so only characters outside the set
    become ``[UNK]``."""
    words = Counter(_words(lines))
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation) | {c for w in words for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    seen = set(vocab)
    vocab += [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if w not in seen]
    return vocab


def tokenizer(max_positions: int = 512):
    """transformers' ``BertTokenizerFast`` over the shipped :data:`VOCAB` (lower-casing, no hub),
    its ``model_max_length`` the model's position limit so :func:`workbench.tasks.hf.tokenize` truncates
    there (and says so)."""
    from .hf import _transformers

    tf = _transformers()
    tok = tf.BertTokenizerFast(vocab=str(VOCAB), do_lower_case=True)  # transformers 5 reads vocab=, not vocab_file=
    tok.model_max_length = max_positions
    return tok


def settle_encoder(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give a random-init ``BertModel`` weights under which it behaves like a trained encoder, as
    quantisation sees it. transformers' initialisation (normal, std 0.02) maps every sentence to
    nearly one mean-pooled embedding (pairwise cosine 0.95 on the shipped text): every token carries
    the same token-type row, attention is uniform and each layer changes the residual stream by a
    few percent, so any quantisation looks harmless. Here, all seeded, no data involved:

    - word embeddings unit-normal rows ([PAD] zero), position embeddings sinusoidal at 0.2 of
      that scale, the token-type row zero: a sentence's tokens, not what all share, dominate;
    - attention: query and key weights std 0.06, correlated 0.5 (a self-similar part, as in trained
      heads that attend to related tokens), so the attention entropy is about half of uniform's;
      value weights std ``1/sqrt(hidden)``, output weights half that;
    - feed-forward: first layer std ``1/sqrt(hidden)`` (GELU inputs of unit variance), second std
      ``0.75/sqrt(intermediate)``, its bias cancelling GELU's positive mean (else every token gains
      one shared direction per layer and sentences collapse again).

    On the shipped text (6 layers) the mean pairwise cosine of sentence embeddings is then 0.37
    (-0.10 to 0.74; 0.95 before) and each layer changes its input by about half its norm. Linear
    inputs stay within about 6 in absolute value (unit standard deviation after each LayerNorm):
    no outlier channels as trained checkpoints have, so W8A8 is easier here than on those.
    Runs on one thread (the one reduction, the bias, sums the same way whatever the caller's count)."""
    from ..infra.determinism import fixed_threads

    cfg = model.config
    hidden, inter = cfg.hidden_size, cfg.intermediate_size
    gen = torch.Generator().manual_seed(seed)
    rn = lambda *shape: torch.randn(shape, generator=gen)
    with torch.no_grad(), fixed_threads(1):
        emb = model.embeddings
        emb.word_embeddings.weight.copy_(rn(*emb.word_embeddings.weight.shape))
        if emb.word_embeddings.padding_idx is not None:
            emb.word_embeddings.weight[emb.word_embeddings.padding_idx].zero_()
        positions = emb.position_embeddings.weight.shape[0]
        pos = torch.arange(positions, dtype=torch.float64)[:, None]
        freq = torch.exp(-math.log(1e4) * torch.arange(0, hidden, 2, dtype=torch.float64) / hidden)
        table = torch.zeros(positions, hidden, dtype=torch.float64)
        table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)[:, : hidden // 2]
        emb.position_embeddings.weight.copy_((0.2 * table).float())
        emb.token_type_embeddings.weight.zero_()
        for layer in model.encoder.layer:
            att = layer.attention.self
            wq = rn(hidden, hidden) * 0.06
            att.query.weight.copy_(wq)
            att.key.weight.copy_(0.5 * wq + math.sqrt(0.75) * rn(hidden, hidden) * 0.06)
            att.value.weight.copy_(rn(hidden, hidden) / math.sqrt(hidden))
            out = layer.attention.output.dense
            out.weight.copy_(rn(hidden, hidden) * (0.5 / math.sqrt(hidden)))
            up, down = layer.intermediate.dense, layer.output.dense
            up.weight.copy_(rn(inter, hidden) / math.sqrt(hidden))
            down.weight.copy_(rn(hidden, inter) * (0.75 / math.sqrt(inter)))
            for lin in (att.query, att.key, att.value, out, up):
                lin.bias.zero_()
            down.bias.copy_((-GELU_MEAN * down.weight.double().sum(1)).float())
            for norm in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
                norm.weight.fill_(1.0)
                norm.bias.zero_()
        emb.LayerNorm.weight.fill_(1.0)
        emb.LayerNorm.bias.zero_()
    return model.eval()


@functools.lru_cache(maxsize=4)
def _built(layers: int, hidden: int, heads: int, intermediate: int, max_positions: int, vocab_size: int, normalize: bool, seed: int) -> nn.Module:
    from .hf import SentenceEmbedding, _transformers

    tf = _transformers()
    cfg = tf.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=max_positions, pad_token_id=0,
                        attn_implementation="eager", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # transformers' own initialisation, overwritten by settle_encoder: the caller's RNG is left alone
        encoder = tf.BertModel(cfg, add_pooling_layer=False)
    return SentenceEmbedding(settle_encoder(encoder, seed), "mean", normalize=normalize).eval()


def _check_sizes(**sizes) -> None:
    for label, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < (0 if label == "seed" else 1):
            raise TaskError(f"{label} {n!r}; expected an integer >= {0 if label == 'seed' else 1}")
    hidden, heads = sizes.get("hidden", 384), sizes.get("heads", 12)
    if hidden % heads or hidden % 2:
        raise TaskError(f"hidden {hidden} with {heads} heads; expected an even hidden size divisible by the number of heads")


def vocab_size() -> int:
    return sum(1 for line in VOCAB.read_text(encoding="utf-8").splitlines() if line)


def minilm_encoder(layers: int = 6, hidden: int = 384, heads: int = 12, intermediate: int = 1536, max_positions: int = 512,
                   normalize: bool = True, seed: int = 0) -> nn.Module:
    """A sentence encoder of all-MiniLM-L6-v2's shape over the shipped vocabulary: ``BertModel``
    (eager attention, no dropout, no pooler), mean pooling over the attention mask, L2-normalised
    (``normalize``), weights from :func:`settle_encoder`. Input ``(N, 2, L)`` ids and mask, as
    :func:`workbench.tasks.hf.tokenize` writes them. A fresh copy each call."""
    _check_sizes(layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, max_positions=max_positions, seed=seed)
    return copy.deepcopy(_built(layers, hidden, heads, intermediate, max_positions, vocab_size(), bool(normalize), seed))


def minilm_task(name: str = "hf-minilm-embed", *, layers: int = 6, seq_len: int = 32, seed: int = 0):
    """The registered task: :func:`minilm_encoder` on the shipped sentences, calibration and
    evaluation split by :func:`split_sentences`, tokenised to ``(N, 2, seq_len)`` ids and mask;
    kind ``embedding`` (metric: mean cosine to the float embeddings; agreement: the pairwise
    similarity ranking kept, Spearman). Targets are computed when the data is first used."""
    from .data import Split, TaskData
    from .hf import _cosine_metric, tokenize
    from .registry import Task

    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 4 <= seq_len <= 512:
        raise TaskError(f"seq_len {seq_len!r}; expected an integer in 4-512 (the model's position limit)")
    _check_sizes(layers=layers, seed=seed)
    model_fn = lambda: minilm_encoder(layers=layers, seed=seed)

    def data() -> TaskData:
        calib_text, eval_text = split_sentences(sentences())
        tok = tokenizer()
        calib_x, eval_x = tokenize(tok, calib_text, max_length=seq_len), tokenize(tok, eval_text, max_length=seq_len)
        with torch.no_grad():
            model = model_fn()
            targets = torch.cat([model(eval_x[i : i + 64]) for i in range(0, len(eval_x), 64)])
        calib = Split(calib_x)
        return TaskData(calib, calib, Split(eval_x, targets), source=f"shipped English sentences ({len(calib_text)} calibration, {len(eval_text)} eval)")

    return Task(name=name, model_factory=model_fn, data_factory=data, metric=_cosine_metric(), kind="embedding", input_shape=(2, seq_len),
                data_source="shipped English sentences (written for the workbench); label-free: cosine to the float embeddings",
                description=f"MiniLM-size sentence encoder ({layers} layers, hidden 384, 12 heads, intermediate 1536, transformers BertModel, "
                            "mean pooling, L2-normalised), vocabulary the shipped text's own (WordPiece), random init settled",
                pretrained=True, seed=seed, input_dtype=torch.int64)
