"""A quantisation job: float baseline, one or more per-layer specs, export, verification and a
report, written into one output directory (what ``workbench demo`` and ``workbench quantize`` run)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..tasks.baseline import load_or_train_baseline
from ..infra.determinism import fixed_threads
from ..tasks.evaluate import predict
from ..export.packing import resolve_pack
from ..export.qcdq import resolve_weight_encoding
from ..infra.errors import ExportError
from ..export.exporters import DEFAULT_FORMATS, check_spec_formats, get_exporter, resolve_formats
from ..core.cost import cost_table, described_costs, layer_costs, totals
from ..infra.fileio import atomic_write_json, atomic_write_text, inside
from ..export.pipeline import PTQConfig, Timer, evaluate_quantized, export_and_verify, export_float_model, quantize_task
from ..infra.outdir import MARKER, RunDir
from .report import write_report
from ..core.quantize import validate_spec
from ..core.spec import QuantSpec
from ..export.verify import latency_where

SUMMARY_KEYS = ("fp_metric", "quant_metric", "onnx_metric", "onnx_agreement", "max_abs_diff", "weight_bytes_fp", "weight_bytes_quant",
                "onnx_file_bytes", "int_kernel_nodes", "latency_ms_p50_fp", "latency_ms_p50_quant")


def run_job(task, variants: dict[str, QuantSpec | dict], out_dir: str | Path | RunDir, *, ptq: PTQConfig = PTQConfig(), formats=DEFAULT_FORMATS, qonnx: bool | None = None,
            latency_runs: int = 200, progress: bool = True, float_model: torch.nn.Module | None = None, weight_encoding: str | None = None,
            target=None, extra: dict | None = None, files: dict[str, str] | None = None, sections: list | None = None,
            train=None, overwrite: bool = False, pack: bool | str = True, variant_formats: dict | None = None) -> dict:
    """Run every variant; the first is the primary one (``model.onnx``, top-level summary keys).

    ``out_dir`` is a folder path or a :class:`~workbench.infra.outdir.RunDir` checked earlier. Everything is
    built in a temporary folder beside it and moved into place at the end, so it never holds a
    half-written result; an existing folder is replaced only if the workbench wrote it and
    ``overwrite`` is true (see :mod:`workbench.infra.outdir`). ``train(qmodel) -> qmodel`` runs after PTQ
    (quantisation-aware training). Torch runs with the workbench's fixed thread count
    (:mod:`workbench.infra.determinism`), so the bytes do not depend on the caller's.
    ``formats``: the export formats written for each variant (names from :mod:`workbench.export.exporters`;
    ``qcdq`` is required); ``qonnx`` is the deprecated boolean alias (False: no QONNX).
    ``weight_encoding``: ``u8``, ``s8`` or ``auto`` (s8 where this CPU has VNNI or is ARM); None:
    the ``target`` profile's (a name, YAML file or :class:`~workbench.core.cost.TargetProfile`), else
    ``auto``. The summary records the choice (``weight_encoding``) and the probe (``cpu_vnni``).
    ``pack``: True / ``"int4"`` (default: weights of at most 4 bits two a byte, QONNX weights as
    integers) or False / ``"none"`` (int8 containers in QCDQ, float weights in QONNX); recorded as ``pack``.
    ``variant_formats``: export formats of named variants in place of ``formats`` (a promoted
    recipe exported as its ``export.formats`` say).
    Each variant records its MACs, BOPs and peak activation bytes at its bits (the cost kinds of
    :mod:`workbench.core.cost`: ``macs``, ``bops``, ``peak_act_bytes``); the summary says where latency
    was measured (``latency_where``, :func:`~workbench.export.verify.latency_where`).
    """
    if not variants:
        raise ValueError("run_job needs at least one variant spec")
    if weight_encoding is None:
        from ..core.cost import TargetProfile, load_target

        profile = target if isinstance(target, TargetProfile) or target is None else load_target(target)
        weight_encoding = (profile.weight_encoding if profile is not None else None) or "auto"
    resolve_weight_encoding(weight_encoding, vnni=False)  # a bad value fails before any work
    resolve_pack(pack)  # likewise
    formats = resolve_formats(formats, qonnx=qonnx)  # unknown names fail before any work
    specs = {name: QuantSpec.parse(spec) for name, spec in variants.items()}
    unknown = sorted(set(variant_formats or {}) - set(specs))
    if unknown:
        from ..infra.errors import SpecError

        raise SpecError(f"variant_formats names {', '.join(unknown)}; expected variants of this job: {', '.join(specs)}")
    per_variant = {name: resolve_formats(f) for name, f in (variant_formats or {}).items()}
    probe = float_model if float_model is not None else task.create_model()
    for name, spec in specs.items():
        check_spec_formats(validate_spec(spec, probe), per_variant.get(name, formats))  # bad layer names, formats an exporter cannot carry: before training anything
    run_dir = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir, overwrite=overwrite, command="run_job")
    timer = Timer()
    steps = 2 + 2 * len(specs) + 1
    with fixed_threads() as threads, run_dir as work:
        bar = tqdm(total=steps, desc=task.name, disable=not progress)
        try:
            bar.set_postfix_str("float baseline")
            model = float_model if float_model is not None else load_or_train_baseline(task, progress=progress)
            fp_out = predict(model, task.data.eval.x)
            fp_onnx = export_float_model(task, model, work)
            costs = layer_costs(model, task.example_input())
            bar.update()
            variants_out, layers = {}, {}
            for i, (name, spec) in enumerate(specs.items()):
                bar.set_postfix_str(f"{name}: quantise + calibrate")
                qmodel = quantize_task(task, model, spec, ptq)
                if train is not None:
                    bar.set_postfix_str(f"{name}: quantisation-aware training")
                    qmodel = train(qmodel)
                ev = evaluate_quantized(task, model, qmodel, fp_outputs=fp_out)
                bar.update()
                bar.set_postfix_str(f"{name}: export + verify")
                stem = "model" if i == 0 else f"model_{name}"
                ver = export_and_verify(task, qmodel, work, stem, formats=per_variant.get(name, formats), float_onnx=fp_onnx, latency_runs=latency_runs, sim_outputs=ev["sim_outputs"], float_model=model, fp_outputs=fp_out,
                                        weight_encoding=weight_encoding, pack=pack)
                bar.update()
                layers[name] = ev.pop("layers")
                ev.pop("sim_outputs")
                cost = described_costs(costs, layers[name])
                variants_out[name] = {"spec": spec.to_dict(), **ev, **ver, **{k: cost[k] for k in ("macs", "bops", "peak_act_bytes")}}
            primary = next(iter(variants_out.values()))
            fp_cost = totals(cost_table(costs, {n: None for n in costs}, None))
            summary = {
                "task": task.name,
                "metric_name": task.metric.name,
                "data_source": task.data_source,
                "synthetic": task.synthetic,
                **{k: primary[k] for k in SUMMARY_KEYS},
                "latency_ms_p99_fp": primary.get("latency_ms_p99_fp"),
                "latency_ms_p99_quant": primary.get("latency_ms_p99_quant"),
                **{k: primary.get(k) for k in ("latency_method", "weight_encoding", "cpu_vnni", "pack")},
                "latency_where": latency_where(),
                "float_costs": {k: fp_cost[k] for k in ("macs", "bops", "peak_act_bytes")},
                **{k: primary.get(k) for k in ("onnx_weight_bytes_packed", "onnx_float_bytes", "packing")},  # file bytes by what they hold
                **{k: primary[k] for k in ("qonnx_file_bytes", "qonnx_weight_bytes_packed", "qonnx_int8_bytes", "qonnx_int16_bytes", "qonnx_float_bytes",
                                        "qonnx_graph_bytes", "qonnx_packing") if k in primary},
                "primary_variant": next(iter(variants_out)),
                "ptq": ptq.to_dict(),
                "variants": variants_out,
                "workbench_version": __version__,
                "torch_version": torch.__version__,
                "torch_threads": threads,
            }
            bar.set_postfix_str("report")
            for name, df in layers.items():
                df.to_csv(inside(work, f"layers_{name}.csv"), index=False)
            if extra:
                summary.update(extra(summary) if callable(extra) else extra)
            summary["seconds"] = timer()
            atomic_write_json(inside(work, "summary.json"), summary)
            for name, text in (files or {}).items():  # text, or a callable of the summary
                atomic_write_text(inside(work, name), text(summary) if callable(text) else text)
            atomic_write_text(inside(work, "report.html"), write_report(summary, layers, sections or []))
            bar.update()
        finally:
            bar.close()
    return summary


DEMO_TASK = "digits-cnn"
DEMO_VARIANTS = {"w8a8": QuantSpec.uniform(8, 8), "w4a8": QuantSpec.uniform(4, 8)}
#: Deployment targets the demo builds when their toolchain is installed (``pip install
#: 'workbench[targets]'``; ``make test`` installs it, ``make demo`` does not need it).
DEMO_TARGETS = ("tflite-int8",)
#: The demo's variant name for the point its search chose and promoted to ``recipe.yaml``.
CHOSEN = "chosen"


def installed_targets(names) -> tuple[str, ...]:
    """Those of ``names`` whose toolchain imports here."""
    from ..infra.errors import ToolchainError

    out = []
    for name in names:
        try:
            get_exporter(name).available()
        except ToolchainError:
            continue
        out.append(name)
    return tuple(out)


#: The demo's budget on the realised ONNX file (onnx_kib): between digits-cnn's uniform W4 file
#: (11,366 bytes, 11.1 KiB) and W8 file (18,381 bytes u8, 18,527 s8: about 18 KiB), so the
#: search has a real choice of which layers keep 8 bits.
DEMO_BUDGET_KIB = 15.0


def run_demo(out_dir: str | Path, progress: bool = True, budget_kib: float = DEMO_BUDGET_KIB, overwrite: bool = False, targets=None,
             **kwargs) -> dict:
    """The main job on the built-in default: digits-cnn float baseline, W8A8 and W4A8 PTQ, export and
    verification; then per-layer sensitivity, a mixed-precision search under ``budget_kib`` (KiB of
    the realised QCDQ ONNX file, ``onnx_kib``: what cpu-int8-ort budgets; the theoretical packed
    weight KiB are shown beside it) and the
    chosen point promoted to ``recipe.yaml`` (rebuild it with ``workbench apply``), itself rebuilt,
    exported and verified as the variant ``chosen`` (the recipe's formats; its expectations checked,
    ``summary["search"]["expectations_failed"]``).
    ``targets``: deployment targets built for every variant (None: those of :data:`DEMO_TARGETS`
    whose toolchain is installed); the W8A8 variant's rows go to ``deployment.csv`` and the report."""
    import html as _html

    from ..tasks.baseline import load_or_train_baseline
    from .recipe import promote
    from .report import pareto_figure, sensitivity_heatmap
    from ..core.cost import get_cost_kind
    from ..search.config import SearchConfig
    from ..search.front import best_within
    from ..search.precision import search
    from ..analysis.sensitivity import SensitivityConfig, sensitivity
    from ..tasks.registry import create_task

    resolve_pack(kwargs.get("pack", True))  # a bad value fails before any work
    run_dir = RunDir(out_dir, overwrite=overwrite, command="demo")  # checked before any work
    task = create_task(DEMO_TASK)
    with fixed_threads():
        model = load_or_train_baseline(task, progress=progress)
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=(2, 3, 4, 5, 6, 7, 8)), progress=progress)
    config = SearchConfig(n_budgets=4)  # budgets cpu-int8-ort's realised kind, onnx_kib
    kind, label = config.budget_kind, get_cost_kind(config.budget_kind).label
    front = search(task, model, sens, config, extra_budgets=(budget_kib,), progress=progress)
    chosen = best_within(front, budget_kib, kind)
    recipe = promote(task, chosen, target="cpu-int8-ort", name=f"{DEMO_TASK}-{budget_kib:g}kib", weight_encoding=kwargs.get("weight_encoding"),
                     pack=kwargs.get("pack"))
    recipe_yaml = recipe.to_yaml()
    sections = [
        ("Per-layer sensitivity (quantise-one, weights)", sensitivity_heatmap(sens, "metric_delta"), ""),
        (f"Mixed-precision search (budget {budget_kib:g} KiB, {label})",
         pareto_figure(front, kind, task.metric.name, budget=budget_kib, chosen=chosen.name),
         f"<p>Chosen (best measured within the budget, {chosen['kind']}): {chosen[kind]:.2f} KiB {label} "
         f"({chosen['weight_kib']:.2f} {get_cost_kind('weight_kib').label}), measured {chosen['measured_metric']:.4f} (estimate {chosen['estimated_metric']:.4f}). "
         f"Promoted to <code>recipe.yaml</code>:</p><pre>{_html.escape(recipe_yaml)}</pre>"),
    ]
    search_info = {"budget_kib": budget_kib, "budget_kind": kind, f"chosen_{kind}": float(chosen[kind]), "chosen_weight_kib": float(chosen["weight_kib"]), "chosen_measured_metric": float(chosen["measured_metric"]),
                   "chosen_bits": chosen["bits"], "front_points": int(front["on_front"].sum()), "recipe": "recipe.yaml", "variant": CHOSEN}
    files = {"recipe.yaml": recipe_yaml, "pareto.csv": front.to_csv(index=False), "sensitivity.csv": sens.to_csv(index=False)}
    kwargs.setdefault("target", "cpu-int8-ort")  # its weight encoding (auto) unless the caller gives one
    targets = installed_targets(DEMO_TARGETS) if targets is None else tuple(targets)
    kwargs["formats"] = (*kwargs.get("formats", DEFAULT_FORMATS), *targets)

    from .deployment import deployment_frame, deployment_records, deployment_table

    def with_deployment(summary: dict) -> dict:
        got = summary["variants"][CHOSEN]
        failed = [f"expected.{key}: {why}" for key, exp in recipe.expected.items() if (why := exp.check(float(got[key])))]
        return {"search": {**search_info, "expected": {k: e.model_dump(exclude_none=True) for k, e in recipe.expected.items()},
                           "expectations_failed": failed},
                "deployment": deployment_records(deployment_table(summary["variants"][summary["primary_variant"]]))}

    files["deployment.csv"] = lambda summary: deployment_frame(summary["deployment"]).to_csv(index=False)
    kwargs.setdefault("ptq", recipe.ptq)
    return run_job(task, {**DEMO_VARIANTS, CHOSEN: recipe.quantization}, run_dir, progress=progress, float_model=model, extra=with_deployment,
                   files=files, sections=sections, variant_formats={CHOSEN: recipe.export.formats}, **kwargs)


def apply_recipe(recipe_path: str | Path, out_dir: str | Path, progress: bool = True, latency_runs: int = 200,
                 checkpoint: bool = False, tracking=None, overwrite: bool = False, allow_code: bool | None = None,
                 targets=None, require_targets: bool = False, target_file=None) -> tuple[dict, list[str]]:
    """Rebuild, export and verify what a recipe describes (pruning, PTQ, quantisation-aware
    training, as it says); returns the summary and the unmet expectations. ``checkpoint`` keeps
    QAT checkpoints in ``out_dir/checkpoints`` so a killed run resumes (``workbench qat``): the
    same recipe may then continue in its own folder without ``overwrite``.
    ``tracking``: an MLflow URI or :class:`~workbench.infra.tracking.Tracker` (None: ``$WORKBENCH_MLFLOW``
    if set; False: off) to log the recipe, the metrics and the files written as one run.
    ``allow_code``: a recipe whose task is a ``module:function`` factory imports and calls it only
    when this is true (None: ``$WORKBENCH_ALLOW_CODE``).
    ``targets``: deployment target names to build beside the export formats (None: the recipe's
    ``targets:`` section); with any, the summary gets ``deployment`` rows, ``deployment.csv`` is
    written and rows outside the recipe's tolerances are failures (:mod:`workbench.runs.deploy`).
    ``require_targets``: refuse (one line) when neither names a target (``workbench deploy``).
    ``target_file``: the YAML file of the profile the recipe's ``target:`` names when it is not a
    registered one (``--target-file``); a recipe alone never makes the workbench read a file."""
    from ..tasks.baseline import load_or_train_baseline
    from ..infra.fileio import sha256_file
    from .recipe import check_recipe_against, load_recipe, recipe_profile, resolve_task
    from ..infra.tracking import resolve_tracker

    from .deployment import deployment_frame, deployment_records, deployment_table, list_target_names, resolve_targets, tolerance_failures
    from .recipe import TargetTolerance

    recipe, recipe_sha = load_recipe(recipe_path)
    recipe_profile(recipe, target_file)  # a target that is neither registered nor given: before any work
    formats = resolve_formats(recipe.export.formats)  # the files written; checked before any work
    tolerances = dict(recipe.targets or {})
    if targets is not None:
        targets = [targets] if isinstance(targets, str) else list(targets)
        tolerances = {name: tolerances.get(name, TargetTolerance()) for name in targets}
    target_names = resolve_targets(list(tolerances))  # unknown names, missing toolchains: before any work
    if require_targets and not target_names:
        raise ExportError(f"no deployment target: name one (--target NAME) or list them in the recipe's targets: section; "
                          f"targets: {', '.join(list_target_names())}")
    formats = (*formats, *(n for n in target_names if n not in formats))
    from ..core.qat import CHECKPOINT_FILES

    run_dir = RunDir(out_dir, overwrite=overwrite, keep={"checkpoints": CHECKPOINT_FILES} if checkpoint else (),
                     resume=f"qat:{recipe_sha}" if checkpoint else None, command="qat" if checkpoint else "apply")
    tracker = resolve_tracker(tracking)  # an unreachable server fails here, before any work
    task = resolve_task(recipe.task, allow_code=allow_code)
    probe = task.create_model()
    check_recipe_against(recipe, task, probe, target_file)  # data, layer names and target before any training
    check_spec_formats(validate_spec(recipe.quantization, probe), formats)  # number formats the exporters cannot carry
    if target_names:  # layers a target cannot take, named before any training or calibration
        from ..core.quantize import quantize_model

        example = task.example_input()
        unfitted = quantize_model(probe, recipe.quantization, example_input=example)
        unfitted.workbench_input_shape, unfitted.workbench_input_dtype = tuple(example.shape[1:]), example.dtype
        for name in target_names:
            get_exporter(name).check(unfitted)
    with fixed_threads():
        model = load_or_train_baseline(task, seed=recipe.task.seed, epochs=recipe.task.epochs, progress=progress)
        ptq = recipe.ptq
        extra_summary = {}
        if recipe.pruning is not None:
            from ..core.pruning import prune
            from ..analysis.pruning_sweep import measure_model

            before = measure_model(task, model, onnx=False)
            model = prune(task, model, recipe.pruning, progress=progress)
            after = measure_model(task, model, onnx=False)
            extra_summary = {"pruning": {"spec": recipe.pruning.to_dict(), **{f"{k}_unpruned": before[k] for k in ("metric", "params", "macs")},
                                           **{k: after[k] for k in ("metric", "params", "macs", "weight_sparsity")}}}

    def checks(summary: dict) -> dict:
        failures = []
        for key, exp in recipe.expected.items():
            why = exp.check(float(summary[key]))
            if why:
                failures.append(f"expected.{key}: {why}")
        out = {"recipe": recipe.name, "recipe_sha256": recipe_sha, "onnx_sha256": summary["variants"][recipe.name]["onnx_sha256"],
               "expectations_failed": failures, **extra_summary}
        if target_names:
            table = deployment_table(summary["variants"][recipe.name])
            failures.extend(tolerance_failures(table, tolerances))
            out["deployment"] = deployment_records(table)
        return out

    files = {"deployment.csv": lambda summary: deployment_frame(summary["deployment"]).to_csv(index=False)} if target_names else None

    train = None
    if recipe.qat is not None:
        from ..core.qat import train_qat

        teacher = model
        config = recipe.qat

        def train(qmodel):
            checkpoints = inside(run_dir.claim(), "checkpoints") if checkpoint else None
            trained, history = train_qat(task, teacher, qmodel, config, checkpoint_dir=checkpoints, progress=progress)
            extra_summary["qat"] = {"config": config.to_dict(), "history": history.to_dict("records")}
            return trained

    summary = run_job(task, {recipe.name: recipe.quantization}, run_dir, ptq=ptq, formats=formats,
                      latency_runs=latency_runs, progress=progress, float_model=model, weight_encoding=recipe.export.weight_encoding, extra=checks,
                      train=train, pack=recipe.export.pack if recipe.export.pack is not None else True, files=files)
    assert summary["onnx_sha256"] == sha256_file(Path(out_dir) / "model.onnx")
    if tracker is not None:  # after the files are written: a failing server loses nothing (a TrackingWarning)
        from ..infra.tracking import TrackingError, warn_untracked

        try:
            summary["mlflow_run_id"] = _log_apply(tracker, recipe, recipe_sha, recipe_path, summary, out_dir)
        except TrackingError as exc:
            summary["mlflow_error"] = str(exc)
            warn_untracked(exc)
    return summary, summary["expectations_failed"]


def _log_apply(tracker, recipe, recipe_sha: str, recipe_path, summary: dict, out_dir) -> str:
    qat_history = summary.get("qat", {}).get("history", [])
    return tracker.log_run(
        f"{'qat' if recipe.qat is not None else 'apply'} {recipe.name}",
        params={"recipe": recipe.model_dump(mode="json"), "recipe_sha256": recipe_sha},
        metrics={k: summary[k] for k in TRACKED_METRICS if isinstance(summary.get(k), (int, float))},
        steps={f"qat_{k}": [row[k] for row in qat_history] for k in ("loss", "metric")} if qat_history else None,
        artifacts=[recipe_path] + sorted(p for p in Path(out_dir).iterdir() if p.is_file() and p.name != MARKER),
        tags={"expectations_failed": str(len(summary["expectations_failed"]))})


TRACKED_METRICS = ("fp_metric", "quant_metric", "onnx_metric", "onnx_agreement", "max_abs_diff", "int_kernel_nodes", "weight_bytes_quant",
                   "onnx_file_bytes", "latency_ms_p50_quant", "latency_ms_p50_fp", "qonnx_agreement")
