"""How closely onnxruntime runs the workbench's W8A8 export of a transformer encoder, against the
Brevitas simulation (issue 15: within 0.5% relative error).

For ``hf-bert``, ``hf-minilm-embed`` (settled weights, the shipped text) and a MiniLM-size mean-pooled sentence encoder (hidden 384, 12 heads, token ids with
padding, the attention mask in the input) at ``--layers`` layers: W8A8 quantisation (calibrated on
the task's calibration split), :func:`workbench.export.qcdq.export_qcdq`, then on the eval inputs
``||ort - sim|| / ||sim||`` with onnxruntime's graph optimisations off and at its default level,
for static activations and for ``act_mode: dynamic``;
beside it ``quant vs float`` (the quantisation noise itself) and ``sim64 vs sim32`` (the same
simulation run in float64: how far float rounding alone moves this quantised model, the floor under
any runtime's agreement), and the first quantiser whose codes differ
(:func:`workbench.analysis.divergence.quantiser_divergence`).

    .venv/bin/python benchmarks/encoder_agreement.py --layers 6
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

import workbench as wb
from workbench.tasks import hf
from workbench.analysis.divergence import first_divergence, quantiser_divergence
from workbench.tasks.evaluate import predict
from workbench.export.qcdq import export_qcdq
from workbench.export.verify import run_onnx, session


def rel(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def mean_pooled(layers: int, n_calib: int = 32, n_eval: int = 32, seq: int = 32):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=1000, hidden_size=384, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=1536,
                                  max_position_embeddings=128, attn_implementation="eager", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = hf.SentenceEmbedding(transformers.BertModel(cfg, add_pooling_layer=False), "mean").eval()
    gen = torch.Generator().manual_seed(0)
    n = n_calib + n_eval
    ids = torch.randint(1, 1000, (n, seq), generator=gen)
    mask = torch.ones_like(ids)
    for i in range(n):
        mask[i, 6 + (i * 7) % (seq - 6):] = 0
    x = torch.stack([ids * mask, mask], 1)
    return hf.label_free_task(model, x[:n_calib], x[n_calib:], name="mean-pooled-encoder"), model


def measure(name: str, task, model, tmp: Path, act_mode: str = "static") -> str:
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, act_mode=act_mode))
    name = f"{name}, {act_mode}"
    path = export_qcdq(q, task.example_input(), tmp / f"{name}.onnx")
    x = task.data.eval.x
    sim = predict(q, x)
    fp = predict(model, x)
    with torch.no_grad():
        s64 = copy.deepcopy(q).double()(x)
    s64 = s64.value if hasattr(s64, "value") else s64
    ort = {lvl: rel(run_onnx(session(path, level=lvl), x), sim) for lvl in ("disabled", "default")}
    first = first_divergence(quantiser_divergence(q, x[:16], "disabled"))
    where = "none" if first is None else f"{first['quantiser']} ({first['mismatch']:.2e} of codes)"
    return (f"{name}: ort vs sim {ort['disabled']:.5f} (optimisations off) {ort['default']:.5f} (default); "
            f"quant vs float {rel(sim, fp):.5f}; sim64 vs sim32 {rel(s64, sim):.5f}; first diverging quantiser: {where}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        task = wb.create_task("hf-bert", layers=args.layers).small(32, 32, 32)
        model = wb.load_or_train_baseline(task, progress=False)
        for mode in ("static", "dynamic"):
            print(measure(f"hf-bert ({args.layers} layers)", task, model, Path(tmp), mode), flush=True)
        task = wb.create_task("hf-minilm-embed", layers=args.layers).small(32, 32, 32)
        model = wb.load_or_train_baseline(task, progress=False)
        for mode in ("static", "dynamic"):
            print(measure(f"hf-minilm-embed ({args.layers} layers, settled weights)", task, model, Path(tmp), mode), flush=True)
        task, model = mean_pooled(args.layers)
        for mode in ("static", "dynamic"):
            print(measure(f"mean-pooled encoder (hidden 384, {args.layers} layers)", task, model, Path(tmp), mode), flush=True)


if __name__ == "__main__":
    main()
