"""Embedding tables quantised when the spec asks (``embedding_bits``, or an override naming a
table): Brevitas QuantEmbedding with one scale per row, stored as int8 (or packed INT4) in the
QCDQ file, gathered as integer rows by onnxruntime, exactly the simulation's values."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import workbench as wb
from workbench.core.cost import cost_table, embedding_costs
from workbench.export.qcdq import export_qcdq
from workbench.core.quantize import RowQuantEmbedding, validate_spec
from workbench.export.verify import onnx_storage, run_onnx, session

TABLES = ("model.bert.embeddings.word_embeddings", "model.bert.embeddings.position_embeddings", "model.bert.embeddings.token_type_embeddings")
WORD = TABLES[0]


@pytest.fixture(scope="module")
def bert():
    task = wb.create_task("hf-bert", layers=2).small(16, 16, 32)
    return task, wb.load_or_train_baseline(task, progress=False)


@pytest.fixture(scope="module")
def exported(bert, tmp_path_factory):
    task, model = bert
    out = tmp_path_factory.mktemp("embq")
    res = {}
    for name, spec in (("float_tables", wb.QuantSpec.uniform(8, 8)), ("e8", wb.QuantSpec.uniform(8, 8, embedding_bits=8)),
                       ("e4", {"weight_bits": 8, "act_bits": 8, "embedding_bits": 8, "layers": {WORD: {"weight_bits": 4}, "type:Embedding": {"weight_bits": 6}}})):
        q = wb.quantize_task(task, model, spec, wb.PTQConfig(calib_samples=16))
        res[name] = (q, export_qcdq(q, task.example_input(), out / f"{name}.onnx"))
    return res


def _int_tables(path) -> dict[tuple, tuple[np.ndarray, onnx.NodeProto]]:
    """``{table shape: (integer table, its Gather node)}`` of the tables the file gathers integer rows from."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        src = node.input[0] if node.op_type == "Gather" else None
        if src in producer and producer[src].op_type == "Cast":  # a packed table, cast back to int8
            src = producer[src].input[0]
        if src in inits and inits[src].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.INT4):
            table = numpy_helper.to_array(inits[src])
            out[tuple(table.shape)] = (table.astype(np.int8), node)
    return out


def test_spec_errors_are_one_line(bert):
    _, model = bert
    for bad in (1, 9, 16, "8", True, 4.0):
        with pytest.raises(wb.infra.SpecError, match=r"^embedding_bits: expected an integer in 2-8 .*; got") as err:
            wb.QuantSpec.parse({"embedding_bits": bad})
        assert "\n" not in str(err.value)
    with pytest.raises(wb.infra.SpecError, match=r"^embedding_bits: expected an integer in 2-8"):
        wb.QuantSpec(embedding_bits=12)
    cases = [
        ({WORD: {"act_bits": 8}}, rf"^layers\.{WORD}\.act_bits: an embedding table reads no activation to quantise"),
        ({"type:Embedding": {"act_format": "fp8_e4m3"}}, r"^layers\.type:Embedding\.act_format: an embedding table reads no activation"),
        ({WORD: {"weight_granularity": "per_tensor"}}, rf"^layers\.{WORD}\.weight_granularity is 'per_tensor'; an embedding table takes one scale per row"),
        ({WORD: {"weight_format": "fp8_e4m3"}}, rf"^layers\.{WORD}\.weight_format is 'fp8_e4m3'; an embedding table takes integer weights"),
        ({WORD: {"weight_bits": 16}}, rf"^layers\.{WORD}\.weight_bits is 16; an embedding table takes 2-8 bits"),
    ]
    for layers, match in cases:
        with pytest.raises(wb.infra.SpecError, match=match) as err:
            validate_spec({"layers": layers}, model)
        assert "\n" not in str(err.value)
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.type:Embedding: the model has no Embedding layer"):
        validate_spec({"layers": {"type:Embedding": {"weight_bits": 8}}}, nn.Sequential(nn.Linear(4, 2)))
    # the same checks before anything is built
    with pytest.raises(wb.infra.SpecError, match=r"act_bits: an embedding table"):
        wb.quantize_model(model, {"layers": {WORD: {"act_bits": 4}}})


def test_default_leaves_tables_float_and_old_specs_round_trip(bert, exported):
    old = {"weight_bits": 4, "act_bits": 8, "weight_granularity": "per_channel", "scale_type": "float", "layers": {"head": {"act_bits": "float"}}}
    spec = wb.QuantSpec.parse(old)
    assert spec.embedding_bits is None and spec.to_dict() == old and "embedding" not in spec.to_yaml()
    asked = wb.QuantSpec.parse({**old, "embedding_bits": 6})
    assert asked.to_dict() == {**old, "embedding_bits": 6} and wb.QuantSpec.from_yaml(asked.to_yaml()) == asked
    assert wb.QuantSpec.parse({"embedding_bits": "float"}) == wb.QuantSpec()
    q, path = exported["float_tables"]
    assert q.workbench_plan.embeddings == {} and set(q.workbench_plan.unsupported) == set(TABLES)
    assert not any(isinstance(m, RowQuantEmbedding) for m in q.modules())
    assert _int_tables(path) == {}
    assert onnx_storage(path, q)["packing"]["float"] == list(TABLES)


def test_w8_tables_stored_as_int8_and_onnxruntime_matches(bert, exported):
    task, model = bert
    (qf, pf), (q8, p8) = exported["float_tables"], exported["e8"]
    assert set(q8.workbench_plan.embeddings) == set(TABLES) and q8.workbench_plan.unsupported == {}
    assert all(isinstance(q8.get_submodule(n), RowQuantEmbedding) for n in TABLES)
    n_table = sum(model.get_submodule(n).weight.numel() for n in TABLES)
    sf, s8 = onnx_storage(pf, qf), onnx_storage(p8, q8)
    # the tables moved from float to int8 storage: a quarter of their float bytes
    assert s8["onnx_int8_bytes"] - sf["onnx_int8_bytes"] == n_table
    assert sf["onnx_float_bytes"] - s8["onnx_float_bytes"] >= 4 * n_table - 4 * sum(model.get_submodule(n).num_embeddings for n in TABLES)
    assert p8.stat().st_size < 0.7 * pf.stat().st_size
    assert s8["packing"]["int8"][-3:] == list(TABLES) and "float" not in s8["packing"]
    # no DequantizeLinear of a whole table: each table is gathered as integers, then scaled per row
    tables = _int_tables(p8)
    assert set(tables) == {tuple(model.get_submodule(n).weight.shape) for n in TABLES}
    # onnxruntime's gathered rows are the simulation's quantised table, bit for bit
    word = q8.get_submodule(WORD)
    table, gather = tables[tuple(word.weight.shape)]
    rows = _rows_model(p8, gather)
    ids = np.arange(word.num_embeddings, dtype=np.int64)[None, :]
    import onnxruntime as ort

    got = ort.InferenceSession(rows.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {gather.input[1]: ids})[0][0]
    want = word.quant_weight().value.detach().numpy()
    assert np.array_equal(got, want) and np.abs(table).max() <= 127
    # the whole model: onnxruntime against the simulation
    x = task.data.eval.x
    with torch.no_grad():
        sim = q8(x).numpy()
    out = run_onnx(session(p8), x)
    assert np.abs(out - sim).max() <= 1e-5 * np.abs(sim).max()
    table_df = wb.describe(q8).set_index("layer")
    assert (table_df.loc[list(TABLES), "type"] == "Embedding").all() and (table_df.loc[list(TABLES), "weight_bits"] == 8).all()
    assert int(table_df.loc[list(TABLES), "weight_bytes"].sum()) == n_table
    priced = cost_table(embedding_costs(q8), {n: 8 for n in TABLES})
    assert int(priced["weight_bytes"].sum()) == n_table and int(cost_table(embedding_costs(model), {n: None for n in TABLES})["weight_bytes"].sum()) == 4 * n_table


def _rows_model(path, gather) -> onnx.ModelProto:
    """The file's own nodes that gather one table's rows (integer Gather, Cast, scale Gather, Mul),
    as a model from ids to rows."""
    model = onnx.load(str(path))
    graph = model.graph
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    cast = consumers[gather.output[0]][0]
    mul = consumers[cast.output[0]][0]
    scale = next(n for n in graph.node if n.output[0] in mul.input and n is not cast)
    assert (cast.op_type, mul.op_type, scale.op_type) == ("Cast", "Mul", "Gather") and scale.input[1] == gather.input[1]
    nodes = [gather, cast, scale, mul]
    used = {i for n in nodes for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    ids = onnx.helper.make_tensor_value_info(gather.input[1], onnx.TensorProto.INT64, [1, None])
    rows = onnx.helper.make_tensor_value_info(mul.output[0], onnx.TensorProto.FLOAT, None)
    out = onnx.helper.make_model(onnx.helper.make_graph(nodes, "rows", [ids], [rows], inits), opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def test_4bit_table_packed(bert, exported):
    task, model = bert
    q4, p4 = exported["e4"]
    plan = q4.workbench_plan.embeddings
    assert plan[WORD].weight_bits == 4 and {plan[n].weight_bits for n in TABLES[1:]} == {6}  # exact name > type:Embedding > embedding_bits
    word = model.get_submodule(WORD)
    st = onnx_storage(p4, q4)
    assert st["onnx_weight_bytes_packed"] == word.weight.numel() // 2 and st["packing"]["int4"] == [WORD]
    assert onnx.load(str(p4)).opset_import[0].version == 21
    table, _ = _int_tables(p4)[tuple(word.weight.shape)]
    assert table.min() >= -8 and table.max() <= 7
    x = task.data.eval.x
    with torch.no_grad():
        sim = q4(x).numpy()
    assert np.abs(run_onnx(session(p4), x) - sim).max() <= 1e-5 * np.abs(sim).max()
    assert p4.stat().st_size < exported["e8"][1].stat().st_size


class _TinyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 16)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, ids):
        return self.fc2(torch.relu(self.fc1(self.emb(ids)))).mean(1)


def test_fx_path_quantises_tables_too(tmp_path):
    model = _TinyEncoder().eval()
    ids = torch.randint(0, 50, (16, 8))
    q = wb.quantize_model(model, {"embedding_bits": 8})
    assert q.workbench_plan.path == "fx" and isinstance(q.get_submodule("emb"), RowQuantEmbedding)
    q = wb.core.calibrate(q, ids)
    path = export_qcdq(q, ids, tmp_path / "tiny.onnx")
    assert set(_int_tables(path)) == {(50, 16)}
    with torch.no_grad():
        sim = q(ids).numpy()
    assert np.abs(run_onnx(session(path), ids) - sim).max() <= 1e-5 * np.abs(sim).max()
    # float tables on the fx path: the token ids reach the table unquantised (Brevitas puts an input quantiser there)
    qf = wb.core.calibrate(wb.quantize_model(model, {}), ids)
    assert qf.workbench_plan.path == "fx" and type(qf.get_submodule("emb")) is nn.Embedding
    assert not any(n.op == "call_module" and n.target == "ids_quant" for n in qf.graph.nodes)
    path = export_qcdq(qf, ids, tmp_path / "tiny_float_table.onnx")
    with torch.no_grad():
        sim = qf(ids).numpy()
    assert np.abs(run_onnx(session(path), ids) - sim).max() <= 1e-5 * np.abs(sim).max()


def test_sensitivity_with_quantised_tables(bert):
    from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

    task, model = bert
    base = wb.QuantSpec.uniform(8, 8, embedding_bits=8)
    sens = sensitivity(task, model, SensitivityConfig(mode="leave-one-float", weight_bits=(8,), base=base, layers=("model.classifier",)),
                       store=False, progress=False)
    assert sens["status"].eq("ok").all() and len(sens) >= 1


def test_qonnx_carries_quantised_tables(bert, exported, tmp_path):
    """Brevitas's QONNX export writes a Quant node on each table (per-row scales); qonnx's executor agrees with the simulation."""
    from workbench.export.qonnx import export_qonnx
    from workbench.export.verify import verify_qonnx

    task, _ = bert
    q4, _ = exported["e4"]
    wb.export.exporters.get_exporter("qonnx").check(q4)  # nothing refused
    path = export_qonnx(q4, task.example_input(), tmp_path / "e4.qonnx.onnx")
    gathers = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Gather"]
    producers = {o: n.op_type for n in onnx.load(str(path)).graph.node for o in n.output}
    assert sum(producers.get(g.input[0]) == "Quant" for g in gathers) == len(TABLES)
    res = verify_qonnx(path, q4, task, n=2)
    assert res["qonnx_max_abs_diff"] <= 1e-5 and res["qonnx_quant_nodes"] >= len(TABLES)
