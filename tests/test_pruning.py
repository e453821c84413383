import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.tasks.models import count_macs, count_params
from workbench.core.pruning import PruningSpec, apply_masks, channel_groups, nm_masks, prune, sparsity_table, unstructured_masks
from workbench.analysis.pruning_sweep import PruningSweepConfig, pruning_sweep, reduction


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return wb.create_task("ic-resnet8").create_model().eval()


def test_two_four_masks_zero_exactly_two_of_every_four(resnet):
    masks = nm_masks(resnet, 2, 4)
    assert set(masks) == set(wb.core.quantisable_layers(resnet))
    pruned = apply_masks(resnet, masks)
    for name, mask in masks.items():
        w = pruned.get_submodule(name).weight.detach().reshape(mask.shape[0], -1)
        full = w.shape[1] - w.shape[1] % 4
        groups = w[:, :full].reshape(w.shape[0], -1, 4)
        assert ((groups == 0).sum(-1) == 2).all(), name
        # the two kept are the two largest of each group in the original weights
        orig = resnet.get_submodule(name).weight.detach().reshape(mask.shape[0], -1)[:, :full].reshape(w.shape[0], -1, 4).abs()
        kept = orig * (groups != 0)
        assert (kept.max(-1).values == orig.max(-1).values).all()


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_global_unstructured_sparsity_hits_its_level(resnet, sparsity):
    pruned = apply_masks(resnet, unstructured_masks(resnet, sparsity, scope="global"))
    table = sparsity_table(pruned)
    total = table["weights"].sum()
    assert abs(table["zeros"].sum() - sparsity * total) <= 1
    assert table["sparsity"].std() > 0  # one threshold: layers end up at different levels
    assert (table["dense_bytes"] == 4 * table["weights"]).all()  # honest: masks do not shrink tensors


def test_per_layer_unstructured_sparsity(resnet):
    table = sparsity_table(apply_masks(resnet, unstructured_masks(resnet, 0.5, scope="layer")))
    assert ((table["zeros"] - 0.5 * table["weights"]).abs() <= 1).all()


def test_input_model_unchanged_and_bad_input(resnet):
    before = resnet.stem[0].weight.clone()
    apply_masks(resnet, unstructured_masks(resnet, 0.5))
    assert torch.equal(before, resnet.stem[0].weight)
    for bad in (1.0, -0.1, 1.5, "half", True):
        with pytest.raises(wb.infra.SpecError, match=r"sparsity: expected a value in \[0, 1\)"):
            unstructured_masks(resnet, bad)
    with pytest.raises(wb.infra.SpecError, match="0 < n < m"):
        nm_masks(resnet, 4, 4)
    with pytest.raises(wb.infra.SpecError, match="layers.stack1.conv3: no such prunable layer; closest: stack1.conv2"):
        unstructured_masks(resnet, 0.5, layers=["stack1.conv3"])


# ----------------------------------------------------------------------------- structured (Torch-Pruning)



@pytest.fixture(scope="module")
def resnet_task():
    """ic-resnet8 on a small subset with its trained float baseline (about 2 s)."""
    task = wb.create_task("ic-resnet8").small(256, 64, 128)
    return task, wb.load_or_train_baseline(task, progress=False)


def _macs(model, task):
    return sum(count_macs(model, task.example_input()).values())


def test_structured_half_cuts_params_and_macs_and_still_exports_and_verifies(resnet_task, tmp_path):
    task, model = resnet_task
    pruned = prune(task, model, PruningSpec(method="structured", sparsity=0.5, finetune_epochs=1))
    params_cut = 1 - count_params(pruned) / count_params(model)
    macs_cut = 1 - _macs(pruned, task) / _macs(model, task)
    assert params_cut >= 0.4 and macs_cut >= 0.4, (params_cut, macs_cut)
    # channels really gone: smaller tensors, consistent across the residual adds
    assert pruned.stem[0].out_channels == 8 and pruned.stack1.conv2.out_channels == 8 and pruned.stack2.shortcut.in_channels == 8
    assert pruned.stem[1].num_features == 8 and pruned.classifier.out_features == 10
    assert model.stem[0].out_channels == 16  # the input model is untouched
    qmodel = wb.quantize_task(task, pruned, wb.QuantSpec.uniform(8, 8))
    result = wb.export_and_verify(task, qmodel, tmp_path, "pruned", qonnx=False, latency_runs=10)
    assert result["onnx_agreement"] >= 0.99
    assert result["int_kernels"].get("QLinearConv", 0) == 9 and result["int_kernels"].get("QGemm", 0) == 1
    unpruned = wb.export_and_verify(task, wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8)), tmp_path, "full", qonnx=False, latency_runs=10)
    assert result["onnx_file_bytes"] < 0.6 * unpruned["onnx_file_bytes"]


def test_channel_groups_tie_residual_and_depthwise_layers_and_refuse_the_output():
    torch.manual_seed(0)
    task = wb.create_task("ic-resnet8")
    groups = channel_groups(task.create_model(), torch.zeros(1, 3, 32, 32)).set_index("layer")
    assert set(groups.loc["stem.0", "group"].split(", ")) == {"stem.0", "stack1.conv2"}  # joined by the residual add
    assert set(groups.loc["stack2.conv2", "group"].split(", ")) == {"stack2.conv2", "stack2.shortcut"}
    assert groups.loc["stack1.conv1", "refused"] == ""
    assert "model's output" in groups.loc["classifier", "refused"]
    kws = wb.create_task("kws-dscnn")
    g = channel_groups(kws.create_model(), torch.zeros(1, 1, 49, 10)).set_index("layer")
    assert set(g.loc["blocks.0", "group"].split(", ")) == {"stem.1", "blocks.0"}  # a depthwise conv follows its input's channels


def test_depthwise_model_prunes_consistently():
    task = wb.create_task("kws-dscnn").small(64, 32, 32)
    torch.manual_seed(0)
    model = task.create_model().eval()
    pruned = prune(task, model, {"sparsity": 0.5, "criterion": "l2"})
    for i in (0, 6, 12, 18):  # depthwise layers stay depthwise
        conv = pruned.blocks[i]
        assert conv.groups == conv.in_channels == conv.out_channels
    assert wb.tasks.predict(pruned, task.data.eval.x).shape == (32, 12)
    assert count_params(pruned) < 0.5 * count_params(model)


def test_data_driven_criteria_choose_other_channels(resnet_task):
    task, model = resnet_task
    kept = {}
    for criterion in ("l1", "taylor", "bn_scale"):
        pruned = prune(task, model, {"sparsity": 0.5, "criterion": criterion, "layers": ["stack3.conv1"]})
        assert pruned.stack3.conv1.out_channels == 32 and pruned.stack3.conv2.in_channels == 32
        # which of the 64 channels survived: match the kept filters against the original ones
        orig = model.stack3.conv1.weight.detach().flatten(1)
        kept[criterion] = {int((orig - w.flatten()).abs().sum(1).argmin()) for w in pruned.stack3.conv1.weight.detach()}
    assert kept["taylor"] != kept["l1"] and kept["bn_scale"] != kept["l1"]
    # l1 (Torch-Pruning's group magnitude: the filter, its BatchNorm entry and the next layer's
    # input slice) keeps channels of larger weights than those it removes
    norms = model.stack3.conv1.weight.detach().abs().flatten(1).sum(1) + model.stack3.conv2.weight.detach().abs().transpose(0, 1).flatten(1).sum(1)
    removed = set(range(64)) - kept["l1"]
    assert norms[sorted(kept["l1"])].mean() > norms[sorted(removed)].mean()


def test_masked_fine_tune_keeps_masks_and_hits_levels(resnet_task):
    task, model = resnet_task
    pruned = prune(task, model, {"method": "unstructured", "sparsity": 0.6, "finetune_epochs": 1})
    table = sparsity_table(pruned)
    assert abs(table.attrs["global_sparsity"] - 0.6) < 1e-3  # zeros stay zero through the optimiser steps
    assert not torch.equal(pruned.classifier.bias, model.classifier.bias)  # it did train
    nm = prune(task, model, {"method": "nm", "sparsity": 0.5, "finetune_epochs": 1, "criterion": "taylor"})
    for name, m in wb.core.quantisable_layers(nm).items():
        w = nm.get_submodule(name).weight.detach().reshape(nm.get_submodule(name).weight.shape[0], -1)
        full = w.shape[1] - w.shape[1] % 4
        assert ((w[:, :full].reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all(), name


def test_pruning_bad_input(resnet_task):
    task, model = resnet_task
    for bad in (1.0, -0.1, "half", True):
        with pytest.raises(wb.infra.SpecError, match=r"sparsity: expected a value in \[0, 1\)"):
            PruningSpec.parse({"sparsity": bad})
    with pytest.raises(wb.infra.SpecError, match="N:M sparsity 0.3 is not a whole number of weights out of m=4; expected one of 0.25, 0.5, 0.75"):
        PruningSpec.parse({"method": "nm", "sparsity": 0.3})
    with pytest.raises(wb.infra.SpecError, match="bn_scale' ranks channels"):
        PruningSpec.parse({"method": "unstructured", "criterion": "bn_scale"})
    with pytest.raises(wb.infra.PruningError, match="^classifier: cannot be pruned: its channels are the model's output"):
        prune(task, model, {"layers": ["classifier"]})
    with pytest.raises(wb.infra.PruningError, match="stack1.conv1: pruning 0.97 of its 16 output channels would remove every channel; expected a sparsity of at most 0.938"):
        prune(task, model, {"sparsity": 0.97, "layers": ["stack1.conv1"]})
    with pytest.raises(wb.infra.SpecError, match="layers.stack1.conv3: no such prunable layer; closest: stack1.conv2"):
        prune(task, model, {"layers": ["stack1.conv3"]})


class _Detaching(torch.nn.Module):
    """Its forward leaves autograd half way: Torch-Pruning cannot follow it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.from_numpy(self.a(x).detach().numpy()))


class _Broken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 8)

    def forward(self, x):
        if x.shape[0] == 1:
            raise RuntimeError("no batch of one\nsecond line")
        return self.a(x)


@pytest.mark.parametrize("cls, message", [(_Detaching, "no layer of _Detaching can be pruned \\(a: Torch-Pruning's trace does not reach it"),
                                          (_Broken, "Torch-Pruning cannot trace _Broken \\(RuntimeError: no batch of one\\); structured pruning needs")])
def test_untraceable_models_get_a_clear_message(cls, message):
    task = wb.make_task(cls(), torch.randn(16, 4), (torch.randn(16, 4), torch.randint(0, 2, (16,))), metric=lambda o, t: 0.0)
    with pytest.raises(wb.infra.PruningError, match=message) as info:
        prune(task, task.create_model(), {"sparsity": 0.5})
    assert "\n" not in str(info.value)
    # masks need no tracing
    assert sparsity_table(prune(task, task.create_model(), {"method": "unstructured", "sparsity": 0.5})).attrs["global_sparsity"] == 0.5


# ----------------------------------------------------------------------------- sweeps


def test_structured_sweep_rows_show_real_reductions_and_resume_from_the_store(resnet_task, tmp_path):
    task, model = resnet_task
    store = wb.infra.ResultStore(tmp_path / "r.sqlite")
    config = PruningSweepConfig(method="structured", sparsities=(0.25, 0.5), finetune_epochs=1, latency_runs=10)
    seen = []
    df = pruning_sweep(task, model, config, store=store, progress=False, on_row=seen.append)
    for col in ("method", "sparsity", "layer", "metric", "params", "macs", "onnx_bytes", "latency_ms"):
        assert col in df
    assert len(seen) == len(df) and df.attrs["computed"] == len(df)
    # one row set per channel group: stack1.conv2 is measured as part of stem.0's group
    layers = set(df["layer"])
    assert "stem.0" in layers and "stack1.conv2" not in layers and "global" in layers
    assert df[df["layer"] == "classifier"]["status"].str.startswith("refused: its channels are the model's output").all()
    glob = reduction(df)
    assert list(glob["sparsity"]) == [0.0, 0.25, 0.5]
    half = glob[glob["sparsity"] == 0.5].iloc[0]
    assert half["params_ratio"] < 0.6 and half["macs_ratio"] < 0.6 and half["onnx_bytes_ratio"] < 0.6
    assert glob["latency_ms"].gt(0).all()
    ok = df[df["status"] == "ok"]
    assert ok["metric"].between(0, 1).all() and (ok["finetune_epochs"][ok["sparsity"] > 0] == 1).all()
    again = pruning_sweep(task, model, config, store=store, progress=False)
    assert again.attrs["computed"] == 0 and again.attrs["from_store"] == len(df)
    assert again.drop(columns=["seconds"]).equals(df.drop(columns=["seconds"]))
    assert store.count() == len(df) and store.integrity_ok()


def test_sweep_reference_is_fine_tuned_with_the_same_recipe_as_the_pruned_models(resnet_task):
    """Pruning must not look like a gain because only the pruned models got extra training."""
    import copy

    from workbench.tasks.baseline import train_float

    task, model = resnet_task
    config = PruningSweepConfig(method="structured", sparsities=(0.5,), per_layer=False, finetune_epochs=1, seed=3, latency_runs=0)
    df = pruning_sweep(task, model, config, store=False, progress=False)
    ref = df[(df["layer"] == "global") & (df["sparsity"] == 0)].iloc[0]
    tuned = train_float(copy.deepcopy(model).eval(), task, 3, 1, False).eval()  # the recipe the pruned rows got
    assert ref["finetune_epochs"] == 1 and (df["finetune_epochs"] == 1).all()
    assert ref["metric"] == pytest.approx(wb.tasks.evaluate.evaluate(tuned, task)) and ref["metric_delta"] == 0
    assert df.attrs["fp_metric"] == ref["metric"]
    untuned = pruning_sweep(task, model, config.model_copy(update={"finetune_epochs": 0}), store=False, progress=False)
    ref0 = untuned[(untuned["layer"] == "global") & (untuned["sparsity"] == 0)].iloc[0]
    assert ref0["finetune_epochs"] == 0 and ref0["metric"] == pytest.approx(wb.tasks.evaluate.evaluate(model, task))


def test_unstructured_sweep_reports_sparsity_and_honest_dense_bytes(resnet_task):
    task, model = resnet_task
    df = pruning_sweep(task, model, PruningSweepConfig(method="unstructured", sparsities=(0.5, 0.9), layers=("stack2.conv1",), latency_runs=0),
                       store=False, progress=False)
    glob = df[df["layer"] == "global"].set_index("sparsity")
    assert abs(glob.loc[0.9, "weight_sparsity"] - 0.9) < 1e-3
    assert (df["onnx_bytes"] == glob.loc[0.0, "onnx_bytes"]).all() and (df["params"] == glob.loc[0.0, "params"]).all()
    layer = df[df["layer"] == "stack2.conv1"].set_index("sparsity")
    total = sum(model.get_submodule(n).weight.numel() for n in wb.core.quantisable_layers(model))
    assert abs(layer.loc[0.5, "weight_sparsity"] * total - 0.5 * model.stack2.conv1.weight.numel()) <= 1
    with pytest.raises(wb.infra.SpecError, match=r"sparsities\[1\]: sparsity: expected a value in \[0, 1\); got 1.5"):
        PruningSweepConfig(sparsities=(0.5, 1.5))


# ----------------------------------------------------------------------------- recipes


def test_prune_plus_quantise_recipe_applies_byte_identically(resnet_task, tmp_path):
    from workbench.runs.recipe import load_recipe, promote

    task, model = resnet_task
    spec = PruningSpec(method="structured", sparsity=0.5, finetune_epochs=1)
    pruned = prune(task, model, spec)
    bits = {name: (4 if name.startswith("stack3") else 8) for name in wb.core.quantisable_layers(pruned)}
    q = wb.quantize_task(task, pruned, {"weight_bits": 8, "act_bits": 8, "layers": {k: {"weight_bits": v} for k, v in bits.items()}})
    metric = wb.tasks.evaluate.evaluate(q, task)
    recipe = promote(task, {"bits": json.dumps(bits), "measured_metric": metric}, target="cpu-int8-ort", name="pruned-mixed",
                     formats=("qcdq",), pruning=spec)
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(path)[0].pruning == spec
    exe = str(Path(sys.executable).parent / "workbench")
    runs = [subprocess.run([exe, "apply", str(path), "--out", str(tmp_path / d), "--latency-runs", "10"], capture_output=True, text=True,
                           env=dict(os.environ), timeout=600) for d in ("a", "b")]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-1500:]
    assert "pruned (structured 0.5): params" in runs[0].stdout
    a, b = (tmp_path / "a" / "model.onnx").read_bytes(), (tmp_path / "b" / "model.onnx").read_bytes()
    assert a == b
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["pruning"]["params"] < 0.6 * summary["pruning"]["params_unpruned"]
    assert summary["expectations_failed"] == [] and abs(summary["quant_metric"] - metric) < 1e-9
    layers = (tmp_path / "a" / "layers_pruned-mixed.csv").read_text()
    assert "stack3.conv1,Conv2d,4," in layers and "stem.0,Conv2d,8," in layers


def test_recipe_pruning_section_errors_name_the_field(resnet_task):
    from workbench.runs.recipe import RecipeError, check_recipe_against, parse_recipe

    task, model = resnet_task
    base = {"task": {"name": "ic-resnet8"}, "quantization": {"weight_bits": 8}}
    with pytest.raises(RecipeError, match=r"pruning.sparsity: expected a value in \[0, 1\); got 2"):
        parse_recipe({**base, "pruning": {"sparsity": 2}})
    with pytest.raises(RecipeError, match="pruning.method: Input should be"):
        parse_recipe({**base, "pruning": {"method": "lottery"}})
    recipe = parse_recipe({**base, "pruning": {"layers": ["stack9.conv1"]}})
    with pytest.raises(RecipeError, match="pruning.layers.stack9.conv1: no such prunable layer"):
        check_recipe_against(recipe, task, model)
