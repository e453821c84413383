"""Packed storage: weights of at most 4 bits reach the QCDQ file packed (UINT4 / INT4, two a byte),
onnxruntime still runs them in integer kernels and agrees with the simulation; 8-bit files are
written as before."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import workbench as wb
from workbench.export.packing import PACKED_TYPES
from workbench.export.verify import int_kernel_counts, onnx_storage, onnx_weight_integers

MIXED = {"weight_bits": 4, "act_bits": 8, "layers": {"stack3.conv2": {"weight_bits": 8}}}  # the largest layer (36,864 weights) at 8 bits


@pytest.fixture(scope="module")
def resnet8():
    """ic-resnet8 on a small subset with its trained float baseline (a few seconds)."""
    task = wb.create_task("ic-resnet8").small(256, 64, 128)
    return task, wb.load_or_train_baseline(task, progress=False)


@pytest.fixture(scope="module")
def exported(resnet8, tmp_path_factory):
    task, model = resnet8
    out = tmp_path_factory.mktemp("packing")
    res = {}
    for name, spec in (("w8a8", wb.QuantSpec.uniform(8, 8)), ("w4a8", wb.QuantSpec.uniform(4, 8)), ("mixed", MIXED)):
        q = wb.quantize_task(task, model, spec, wb.PTQConfig(calib_samples=32))
        res[name] = (q, wb.export_qcdq(q, task.example_input(), out / f"{name}.onnx"))
    res["w4a8_int8"] = (res["w4a8"][0], wb.export_qcdq(res["w4a8"][0], task.example_input(), out / "w4a8_int8.onnx", pack=False))
    res["w8a8_nopack"] = (res["w8a8"][0], wb.export_qcdq(res["w8a8"][0], task.example_input(), out / "w8a8_nopack.onnx", pack=False))
    return res


def _run(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_w4a8_file_is_at_most_0_6_of_w8a8_and_verifies(resnet8, exported):
    task, _ = resnet8
    (q8, p8), (q4, p4) = exported["w8a8"], exported["w4a8"]
    assert p4.stat().st_size <= 0.6 * p8.stat().st_size
    m = onnx.load(str(p4))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 21
    packed = [i for i in m.graph.initializer if i.data_type in PACKED_TYPES]
    assert len(packed) == 10  # every conv and the classifier
    sim = wb.tasks.predict(q4, task.data.eval.x)
    res = wb.verify_qcdq(p4, q4, task, sim_outputs=sim)
    assert res["onnx_agreement"] >= 0.99 and res["max_abs_diff"] <= 0.05 * float(sim.abs().max())
    assert abs(res["onnx_metric"] - task.score(sim, task.data.eval)) <= 0.01
    # the integer kernels survive packing: onnxruntime folds the Cast of the constant at load time
    assert res["int_kernels"] == int_kernel_counts(wb.export.optimized_op_counts(p8)) and res["int_kernels"]["QLinearConv"] == 9
    # file bytes say what they hold: every weight at 4 bits, two a byte; nothing packed in the 8-bit file
    modules = dict(q4.named_modules())
    weights = [modules[name].weight.numel() for name in q4.workbench_plan.layers]
    assert res["onnx_file_bytes"] == p4.stat().st_size
    assert res["onnx_weight_bytes_packed"] == sum(len(i.raw_data) for i in packed)
    assert res["onnx_weight_bytes_packed"] == sum((n + 1) // 2 for n in weights) and sum(weights) > 77_000
    assert res["onnx_float_bytes"] > 0 and res["onnx_graph_bytes"] > 0
    assert sum(res[k] for k in ("onnx_weight_bytes_packed", "onnx_int8_bytes", "onnx_int32_bytes", "onnx_float_bytes", "onnx_graph_bytes")) == res["onnx_file_bytes"]
    assert res["packing"] == {"int4": list(q4.workbench_plan.layers)}
    s8 = onnx_storage(p8, q8)
    assert s8["onnx_weight_bytes_packed"] == 0 and s8["packing"] == {"int8": list(q8.workbench_plan.layers)}


def test_packing_changes_storage_not_results(resnet8, exported, tmp_path):
    """Packed and int8-container files compute the same outputs, bit for bit, and hold the same
    integers; packing is deterministic."""
    task, _ = resnet8
    packed, plain = exported["w4a8"][1], exported["w4a8_int8"][1]
    assert wb.export_qcdq(exported["w4a8"][0], task.example_input(), tmp_path / "again.onnx").read_bytes() == packed.read_bytes()
    assert plain.stat().st_size > 1.5 * packed.stat().st_size
    np.testing.assert_array_equal(_run(packed, task.data.eval.x), _run(plain, task.data.eval.x))
    ints = onnx_weight_integers(packed)
    assert ints == onnx_weight_integers(plain) and all(-8 <= lo and hi <= 7 for lo, hi in ints.values())


def test_mixed_4_8_lies_between_and_w8a8_is_unchanged(resnet8, exported):
    task, _ = resnet8
    size = {k: p.stat().st_size for k, (_, p) in exported.items()}
    assert size["w4a8"] < size["mixed"] < size["w8a8"]
    q, p = exported["mixed"]
    res = wb.verify_qcdq(p, q, task)
    assert res["onnx_agreement"] >= 0.99 and res["int_kernels"]["QLinearConv"] == 9
    assert res["packing"]["int8"] == ["stack3.conv2"] and "stack3.conv2" not in res["packing"]["int4"]
    # 8-bit models: byte-identical to the unpacked path, still opset 13
    assert exported["w8a8"][1].read_bytes() == exported["w8a8_nopack"][1].read_bytes()
    assert onnx.load(str(exported["w8a8"][1])).opset_import[0].version == 13


def test_s8_encoding_packs_int4(resnet8, exported, tmp_path):
    task, _ = resnet8
    q = exported["mixed"][0]
    path = wb.export_qcdq(q, task.example_input(), tmp_path / "s8.onnx", weight_encoding="s8")
    types = {i.data_type for i in onnx.load(str(path)).graph.initializer}
    assert onnx.TensorProto.INT4 in types and onnx.TensorProto.UINT4 not in types
    res = wb.verify_qcdq(path, q, task)
    assert res["onnx_agreement"] >= 0.99 and res["int_kernels"]["QLinearConv"] == 9


@pytest.mark.parametrize("pack", ["int2", "uint3", 4, None])
def test_a_packed_format_qcdq_cannot_carry_is_one_line_export_error(resnet8, exported, tmp_path, pack):
    task, _ = resnet8
    with pytest.raises(wb.infra.ExportError, match=r"pack .*: the QCDQ \(onnxruntime\) export packs weights of at most 4 bits as ONNX INT4/UINT4 .*expected one of") as err:
        wb.export_qcdq(exported["w4a8"][0], task.example_input(), tmp_path / "m.onnx", pack=pack)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # refused before any file
