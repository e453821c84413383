import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.core.spec import LayerQuant, resolve

LAYERS = {"stem": ("Conv2d", False), "blocks.0": ("Conv2d", True), "blocks.1": ("Conv2d", False), "head": ("Linear", False)}


@pytest.mark.parametrize("bad", [0, 1, 33, 9, -4, "eight", "8", 8.0, True, None])
def test_bad_bit_widths_raise_one_line_spec_error(bad):
    with pytest.raises(wb.infra.SpecError) as err:
        wb.QuantSpec.parse({"weight_bits": bad})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("weight_bits:")
    assert "2-8 or 16" in msg or "int" in msg or "float" in msg


def test_layer_override_error_names_the_field_path():
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.conv2\.weight_bits: .*got 33"):
        wb.QuantSpec.parse({"layers": {"conv2": {"weight_bits": 33}}})


def test_unknown_field_is_refused():
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.conv2\.wieght_bits: unknown field"):
        wb.QuantSpec.parse({"layers": {"conv2": {"wieght_bits": 4}}})
    with pytest.raises(wb.infra.SpecError, match="^granularity: unknown field"):
        wb.QuantSpec.parse({"granularity": "per_tensor"})


def test_precedence_type_then_glob_then_exact_name():
    spec = wb.QuantSpec.parse({"weight_bits": 8, "layers": {
        "blocks.1": {"weight_bits": 3},      # exact wins over everything
        "blocks.*": {"weight_bits": 5},      # glob wins over type
        "type:Conv2d": {"weight_bits": 6, "act_bits": 7},
    }})
    r = resolve(spec, LAYERS)
    assert r["stem"] == LayerQuant(6, 7, "per_channel", "float")
    assert r["blocks.0"].weight_bits == 5 and r["blocks.0"].act_bits == 7
    assert r["blocks.1"].weight_bits == 3
    assert r["head"] == LayerQuant(8, 8, "per_channel", "float")


def test_depthwise_selector_and_float():
    spec = wb.QuantSpec.parse({"layers": {"type:depthwise": {"weight_bits": "float"}}})
    r = resolve(spec, LAYERS)
    assert r["blocks.0"].weight_bits is None and r["blocks.1"].weight_bits == 8


def test_unknown_layer_lists_closest_names():
    spec = wb.QuantSpec.parse({"layers": {"block.0": {"weight_bits": 4}}})
    with pytest.raises(wb.infra.SpecError, match=r"layers\.block\.0: no such quantisable layer; closest: blocks\.0"):
        resolve(spec, LAYERS)


def test_glob_and_type_that_match_nothing():
    with pytest.raises(wb.infra.SpecError, match="pattern matches no quantisable layer"):
        resolve(wb.QuantSpec.parse({"layers": {"enc.*": {"act_bits": 4}}}), LAYERS)
    with pytest.raises(wb.infra.SpecError, match="the model has no Conv1d layer"):
        resolve(wb.QuantSpec.parse({"layers": {"type:Conv1d": {"act_bits": 4}}}), LAYERS)
    with pytest.raises(wb.infra.SpecError, match="unknown layer type 'LSTM'"):
        resolve(wb.QuantSpec.parse({"layers": {"type:LSTM": {"act_bits": 4}}}), LAYERS)


def test_unsupported_layer_named_in_spec():
    spec = wb.QuantSpec.parse({"layers": {"emb": {"weight_bits": 4}}})
    with pytest.raises(wb.infra.UnsupportedLayerError, match="layers.emb: Embedding layers cannot be quantised"):
        resolve(spec, LAYERS, unsupported={"emb": "Embedding"})


def test_yaml_round_trip_and_bad_yaml():
    spec = wb.QuantSpec.parse({"weight_bits": 6, "layers": {"head": {"act_bits": "float"}}})
    assert wb.QuantSpec.from_yaml(spec.to_yaml()) == spec
    with pytest.raises(wb.infra.SpecError, match="not valid YAML"):
        wb.QuantSpec.from_yaml("weight_bits: [8\n")
    with pytest.raises(wb.infra.SpecError, match="expected a mapping"):
        wb.QuantSpec.from_yaml("- 8\n- 4\n")


values = st.one_of(st.integers(-5, 40), st.text(max_size=6), st.floats(allow_nan=True), st.booleans(), st.none(),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
keys = st.sampled_from(["weight_bits", "act_bits", "weight_granularity", "scale_type", "layers", "bogus"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, st.one_of(values, st.dictionaries(st.text(max_size=8), st.dictionaries(keys, values, max_size=3), max_size=3)), max_size=5))
def test_fuzzed_specs_only_raise_spec_error(obj):
    try:
        spec = wb.QuantSpec.parse(obj)
    except wb.infra.SpecError as exc:
        assert "\n" not in str(exc)
        return
    try:
        resolve(spec, LAYERS)
    except wb.infra.SpecError as exc:
        assert "\n" not in str(exc)


def test_error_path_keeps_layer_names_that_start_like_a_union_tag():
    # pydantic puts union branch names ("int", "literal['float']") in error locations; only those are dropped
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.intro\.conv\.weight_bits: expected an integer in 2-8 or 16"):
        wb.QuantSpec.parse({"layers": {"intro.conv": {"weight_bits": 33}}})
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.int8_head\.act_bits: "):
        wb.QuantSpec.parse({"layers": {"int8_head": {"act_bits": "eight"}}})
