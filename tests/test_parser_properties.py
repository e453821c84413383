"""Issue 28, item 9: property-based tests (hypothesis) of the workbench's parsers.

For the spec parser (:meth:`QuantSpec.parse` / ``from_yaml``), the recipe parser
(:func:`parse_recipe`), the target-profile parser (:func:`workbench.core.cost.parse_target` /
``load_target``) and the layer-selector matcher (:func:`workbench.core.spec.resolve`):

- random valid documents, built from the schema, give a valid object that round-trips
  (``to_dict`` / ``to_yaml`` -> parse -> equal) and holds exactly the values given;
- random invalid documents (wrong types, booleans where numbers go, NaN / inf, zero, negative and
  huge numbers, strings holding numbers, unknown and missing keys, unicode, nested junk, arbitrary
  YAML text) raise exactly the documented one-line error (a :class:`WorkbenchError` subclass),
  never another exception and never a silent coercion.

Runs are bounded and deterministic (``derandomize=True``, no example database).

Four properties here assert behaviour whose fix lives in another part of issue 28 (duplicate YAML
keys, booleans in a profile's budgets, NaN / missing tolerances in expectations, literal selector
names holding glob characters): they are the tests named ``*_duplicate_yaml_keys_*``,
``test_target_budget_booleans_are_not_numbers``, ``test_recipe_expectations_nan_and_no_tolerance_are_refused``
and ``test_selector_exact_name_with_glob_characters_is_literal``.
"""

from __future__ import annotations

import fnmatch
import math
import re

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workbench.core.cost import COST_KINDS, TargetProfile, list_targets, parse_target
from workbench.runs.deployment import list_target_names
from workbench.infra.errors import MAX_MESSAGE, SpecError, WorkbenchError
from workbench.export.exporters import EXPORTERS
from workbench.core.formats import ALLOWED_BITS, FORMATS
from workbench.export.pipeline import WEIGHT_ROUNDING
from workbench.runs.recipe import EXPECTABLE, MAX_SEED, Recipe, RecipeError, parse_recipe
from workbench.core.spec import SELECTOR_TYPES, LayerQuant, QuantSpec, resolve
from workbench.tasks.registry import list_tasks
from workbench.infra.yamlio import loads_yaml

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
FEW, SOME, MANY = settings(max_examples=30, **SETTINGS), settings(max_examples=50, **SETTINGS), settings(max_examples=100, **SETTINGS)


def refused(fn, error: type = SpecError, doc=None) -> str:
    """The message of the ``error`` that ``fn()`` raises; fails on acceptance, on another exception
    type and on a message that is not one bounded line."""
    try:
        value = fn()
    except error as exc:
        text = str(exc)
        assert isinstance(exc, WorkbenchError)
        assert len(text.splitlines()) == 1 and "\n" not in text and 0 < len(text) <= MAX_MESSAGE, text
        assert "Traceback" not in text and "validation error for" not in text and "errors.pydantic.dev" not in text, text
        return text
    except Exception as exc:  # noqa: BLE001 - any other type is the failure this test looks for
        raise AssertionError(f"{type(exc).__name__} (expected {error.__name__}): {exc} for {doc!r}"[:2000]) from exc
    raise AssertionError(f"accepted: {doc!r} -> {value!r}"[:2000])


def is_int(v) -> bool:
    return type(v) is int


def is_real(v) -> bool:
    """A finite int or float (not a bool; an int too large for a float is not finite)."""
    try:
        return type(v) in (int, float) and math.isfinite(float(v))
    except OverflowError:
        return False


# ----------------------------------------------------------------------------- junk

NUMBERISH = ["8", "8.0", "4", " 8", "eight", "true", "yes", "on", "null", "~", "Float", "FLOAT", "float ", "nan", "inf", "-inf", ".inf",
             "1e-4", "0x10", "0o10", "1_000", "８", "𝟠", "int8", "per-channel", "Static", "", " ", "\t", "\u00a0", "a\nb", "\x00", "é", "🙂",
             "../x", "/etc/passwd", "type:", "*", "[", "{a: 1}"]
SCALARS = st.one_of(
    st.booleans(), st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 8, 9, 17, 32, 64, 2**31, 2**63, 2**64, 10**30, -(10**30), 10**400, 8.0, 0.5, -0.0, 1e308, 4.5]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(NUMBERISH),
    st.text(max_size=12),
)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner, max_size=3),
                    max_leaves=6)
YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["weight_bits: 8\n", "act_bits: float\n", "layers: {a: {weight_bits: 4}}\n", "name: x\n", "- 1\n", "? [a]\n: b\n",
                              "weight_bits: [8, 4]\n", "act_bits: [8]\n", "&a x: *a\n", "!!python/object:os.system {}\n", "budgets: {weight_kib: 5}\n",
                              "task: {name: digits-cnn}\n", "{", "}\n", "'\n", "\t\n", "%YAML 1.1\n---\n", "--- |\n  text\n", "!!binary aGk=\n",
                              "weight_bits: !!float 8\n", "recipe_version: 1\n", "seed: 0x10\n", "\ufeff", "...\n", "x: 2001-12-14\n"]),
             max_size=8).map("".join),
)


def bad(valid) -> st.SearchStrategy:
    """Junk that the predicate ``valid`` refuses (the values a field must not accept)."""
    return JUNK.filter(lambda v: not valid(v))


def yaml_load(text: str):
    return loads_yaml(text, "test", SpecError)


def dump(doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# ============================================================================= the spec parser

BITS = list(ALLOWED_BITS) + ["float"]
INT_FORMATS = [n for n, f in FORMATS.items() if f.fixed_bits is None]
FIXED_FORMATS = [n for n, f in FORMATS.items() if f.fixed_bits is not None]
SPEC_FIELDS = ("weight_bits", "act_bits", "weight_granularity", "scale_type", "weight_format", "act_format", "act_mode", "layers",
               "embedding_bits", "attention_bits")
LAYER_FIELDS = ("weight_bits", "act_bits", "weight_granularity", "scale_type", "weight_format", "act_format", "act_mode")
SELECTOR = st.text(min_size=1, max_size=24)


@st.composite
def bits_and_format(draw, prefix: str, optional: bool):
    """``{prefix}_bits`` / ``{prefix}_format`` that agree (a fixed-width format stores its own bits)."""
    out = {}
    fmt = draw(st.sampled_from([None] + INT_FORMATS + FIXED_FORMATS))
    if fmt in FIXED_FORMATS:
        if draw(st.booleans()):
            out[f"{prefix}_bits"] = FORMATS[fmt].fixed_bits
    elif draw(st.booleans()) or not optional:
        out[f"{prefix}_bits"] = draw(st.sampled_from(BITS))
    if fmt is not None:
        out[f"{prefix}_format"] = fmt
    return out


@st.composite
def bits_formats_and_scales(draw):
    """Weight and activation bits / formats, and maybe a granularity and a scale type: what a
    spec's top level and one layer's settings share."""
    d = {**draw(bits_and_format("weight", True)), **draw(bits_and_format("act", True))}
    for field, options in (("weight_granularity", ["per_tensor", "per_channel"]), ("scale_type", ["float", "po2"])):
        if draw(st.booleans()):
            d[field] = draw(st.sampled_from(options))
    return d


@st.composite
def layer_settings(draw):
    d = draw(bits_formats_and_scales())
    if draw(st.booleans()):
        dynamic_ok = d.get("act_bits") in (None, 8) and d.get("act_format") in (None, "int") and d.get("scale_type") in (None, "float")
        d["act_mode"] = draw(st.sampled_from(["static", "dynamic"] if dynamic_ok else ["static"]))
    return d


@st.composite
def spec_docs(draw):
    d = draw(bits_formats_and_scales())
    if draw(st.booleans()):
        act_bits = d.get("act_bits", FORMATS[d["act_format"]].fixed_bits if d.get("act_format") in FIXED_FORMATS else 8)
        dynamic_ok = act_bits == 8 and d.get("act_format", "int") == "int" and d.get("scale_type", "float") == "float"
        d["act_mode"] = draw(st.sampled_from(["static", "dynamic"] if dynamic_ok else ["static"]))
    if draw(st.booleans()):
        d["layers"] = draw(st.dictionaries(SELECTOR, layer_settings(), max_size=4))
    for field in ("embedding_bits", "attention_bits"):
        if draw(st.booleans()):
            d[field] = draw(st.sampled_from([None, "float", 2, 3, 4, 5, 6, 7, 8]))
    return d


def assert_spec_holds(spec: QuantSpec, doc: dict) -> None:
    """Every value given is the value held, of the same type (no coercion); the documented
    exceptions: ``"float"`` embedding / attention bits mean None, a fixed-width format fills its bits."""
    for key, given_value in doc.items():
        held = getattr(spec, key)
        if key == "layers":
            assert list(held) == list(given_value)
            for sel, override in given_value.items():
                for k, v in override.items():
                    assert getattr(held[sel], k) == v and type(getattr(held[sel], k)) is type(v), (sel, k, v)
        elif key in ("embedding_bits", "attention_bits") and given_value == "float":
            assert held is None
        else:
            assert held == given_value and type(held) is type(given_value), (key, given_value, held)
    for prefix in ("weight", "act"):
        fmt = doc.get(f"{prefix}_format")
        if f"{prefix}_bits" not in doc:
            assert getattr(spec, f"{prefix}_bits") == (FORMATS[fmt].fixed_bits if fmt in FIXED_FORMATS else 8)


@MANY
@given(spec_docs())
def test_spec_valid_documents_parse_and_round_trip(doc):
    spec = QuantSpec.parse(doc)
    assert_spec_holds(spec, doc)
    assert QuantSpec.parse(spec.to_dict()) == spec
    assert QuantSpec.from_yaml(spec.to_yaml()) == spec
    assert QuantSpec.from_yaml(dump(doc)) == spec  # the YAML form of the document reads the same


def _bits_ok(v, layer=False) -> bool:
    return (is_int(v) and v in ALLOWED_BITS) or v == "float" and type(v) is str or (layer and v is None)


def _choice_ok(options, layer=False):
    return lambda v: (type(v) is str and v in options) or (layer and v is None)


SPEC_VALID = {
    "weight_bits": _bits_ok, "act_bits": _bits_ok,
    "weight_granularity": _choice_ok(("per_tensor", "per_channel")), "scale_type": _choice_ok(("float", "po2")),
    "weight_format": _choice_ok(tuple(FORMATS)), "act_format": _choice_ok(tuple(FORMATS)), "act_mode": _choice_ok(("static", "dynamic")),
    "embedding_bits": lambda v: v is None or v == "float" and type(v) is str or is_int(v) and 2 <= v <= 8,
    "attention_bits": lambda v: v is None or v == "float" and type(v) is str or is_int(v) and 2 <= v <= 8,
    "layers": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(o, dict) and not o for k, o in v.items()),
}
LAYER_VALID = {
    "weight_bits": lambda v: _bits_ok(v, True), "act_bits": lambda v: _bits_ok(v, True),
    "weight_granularity": _choice_ok(("per_tensor", "per_channel"), True), "scale_type": _choice_ok(("float", "po2"), True),
    "weight_format": _choice_ok(tuple(FORMATS), True), "act_format": _choice_ok(tuple(FORMATS), True),
    "act_mode": _choice_ok(("static", "dynamic"), True),
}


@st.composite
def bad_spec_docs(draw):
    """A valid document with one thing wrong: a field's value, an override's value, an unknown key,
    a non-mapping override or a non-text selector. Returns (document, text the message names)."""
    doc = draw(spec_docs())
    how = draw(st.sampled_from(["field", "field", "layer", "unknown", "layer-unknown", "layer-not-mapping", "selector-not-text"]))
    if how == "field":
        field = draw(st.sampled_from(SPEC_FIELDS))
        doc[field] = draw(bad(SPEC_VALID[field]))
        return doc, field
    if how == "unknown":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in SPEC_FIELDS))
        doc[key] = draw(JUNK)
        return doc, "unknown field"
    layers = doc.setdefault("layers", {})
    sel = draw(SELECTOR)
    if how == "layer":
        field = draw(st.sampled_from(LAYER_FIELDS))
        layers[sel] = {**layers.get(sel, {}), field: draw(bad(LAYER_VALID[field]))}
        return doc, field
    if how == "layer-unknown":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in LAYER_FIELDS))
        layers[sel] = {**layers.get(sel, {}), key: draw(JUNK)}
        return doc, "unknown field"
    if how == "layer-not-mapping":
        layers[sel] = draw(JUNK.filter(lambda v: not isinstance(v, dict)))
        return doc, "layers"
    layers[draw(st.integers(-5, 5) | st.none() | st.booleans() | st.floats(allow_nan=False))] = {}
    return doc, "layers"


@MANY
@given(bad_spec_docs())
def test_spec_invalid_documents_are_one_line_spec_errors(case):
    doc, names = case
    text = refused(lambda: QuantSpec.parse(doc), SpecError, doc)
    assert names in text, (text, doc)
    assert refused(lambda: QuantSpec.from_yaml(dump(doc)), SpecError, doc) == text  # the YAML form: the same one line


@SOME
@given(st.one_of(JUNK, YAML_TEXT.map(lambda t: ("yaml", t))))
def test_spec_arbitrary_documents_give_a_spec_or_one_spec_error(doc):
    if isinstance(doc, tuple):
        text = doc[1]
        assume(not text.strip().endswith((".yaml", ".yml")))  # from_yaml reads such a string as a file name
        fn = lambda: QuantSpec.from_yaml(text)  # noqa: E731
    else:
        fn = lambda: QuantSpec.parse(doc)  # noqa: E731
    try:
        spec = fn()
    except SpecError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) <= MAX_MESSAGE
        return
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{type(exc).__name__}: {exc} for {doc!r}") from exc
    parsed = doc if not isinstance(doc, tuple) else yaml_load(doc[1])
    assert_spec_holds(spec, parsed)
    assert QuantSpec.parse(spec.to_dict()) == spec


def test_spec_silent_coercions_are_refused():
    """The coercions the properties look for, named: none of these is read as a bit-width."""
    for doc in ({"weight_bits": True}, {"weight_bits": 8.0}, {"weight_bits": "8"}, {"act_bits": 1}, {"act_bits": 0}, {"act_bits": -8},
                {"weight_bits": 10**30}, {"weight_bits": float("nan")}, {"weight_bits": float("inf")}, {"embedding_bits": True},
                {"attention_bits": 8.0}, {"layers": {"a": {"weight_bits": False}}}, {"layers": {"a": {"act_bits": "4"}}}, {"weight_bits": "Float"}):
        refused(lambda: QuantSpec.parse(doc), SpecError, doc)
    refused(lambda: QuantSpec.from_yaml("weight_bits: !!float 8\n"), SpecError)
    refused(lambda: QuantSpec.from_yaml("weight_bits: yes\n"), SpecError)  # YAML 1.1's yes is a boolean


def test_spec_duplicate_yaml_keys_are_refused():
    """Waits on issue 28 item 2 (duplicate YAML keys are an error; yamlio.py, another branch)."""
    refused(lambda: QuantSpec.from_yaml("weight_bits: 8\nweight_bits: 4\n"), SpecError)
    refused(lambda: QuantSpec.from_yaml("layers:\n  a: {weight_bits: 4}\n  a: {weight_bits: 8}\n"), SpecError)


# ============================================================================= the target-profile parser

COMPUTED = [k for k, c in COST_KINDS.items() if not c.measured]
MEASURED = [k for k, c in COST_KINDS.items() if c.measured]
WIDTHS = sorted({b for f in FORMATS.values() for b in f.bits})
POSITIVE = st.one_of(st.integers(1, 10**9), st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False))


@st.composite
def target_docs(draw):
    d = {"name": draw(st.text(min_size=1, max_size=30).filter(str.strip)),
         "weight_bits": draw(st.lists(st.sampled_from(WIDTHS), min_size=1, max_size=len(WIDTHS), unique=True)),
         "act_bits": draw(st.lists(st.sampled_from(WIDTHS), min_size=1, max_size=len(WIDTHS), unique=True))}
    if draw(st.booleans()):
        d["description"] = draw(st.text(max_size=40))
    if draw(st.booleans()):
        d["cost"] = draw(st.sampled_from(list(COST_KINDS)))
    if draw(st.booleans()):
        kinds = draw(st.lists(st.sampled_from(list(COST_KINDS)), unique=True, max_size=4))
        d["budgets"] = {k: None if k in MEASURED or draw(st.booleans()) else draw(POSITIVE) for k in kinds}
    if draw(st.booleans()):
        d["weight_encoding"] = draw(st.sampled_from([None, "u8", "s8", "auto"]))
    return d


@MANY
@given(target_docs())
def test_target_valid_documents_parse_and_round_trip(doc):
    profile = parse_target(doc)
    assert profile.name == doc["name"] and profile.weight_bits == sorted(doc["weight_bits"]) and profile.act_bits == sorted(doc["act_bits"])
    assert all(type(b) is int for b in profile.weight_bits + profile.act_bits)
    assert profile.budgets == doc.get("budgets", {}) and profile.cost == doc.get("cost", "weight_kib")
    assert parse_target(profile.model_dump()) == profile
    assert parse_target(yaml_load(dump(profile.model_dump()))) == profile
    assert parse_target(yaml_load(dump(doc))) == profile


def _bitlist_ok(v) -> bool:
    return isinstance(v, list) and bool(v) and all(is_int(b) and b in WIDTHS for b in v) and len(set(v)) == len(v)


def _budget_value_ok(v) -> bool:  # bools are left out: their refusal is another branch's fix (see the module docstring)
    return v is None or isinstance(v, bool) or (is_real(v) and v > 0)


TARGET_VALID = {
    "name": lambda v: isinstance(v, str) and bool(v.strip()), "description": lambda v: isinstance(v, str),
    "weight_bits": _bitlist_ok, "act_bits": _bitlist_ok, "cost": lambda v: isinstance(v, str) and v in COST_KINDS,
    "budgets": lambda v: isinstance(v, dict) and all(isinstance(k, str) and k in COST_KINDS and _budget_value_ok(x) for k, x in v.items()),
    "weight_encoding": lambda v: v is None or (isinstance(v, str) and v in ("u8", "s8", "auto")),
}


@st.composite
def bad_target_docs(draw):
    doc = draw(target_docs())
    how = draw(st.sampled_from(["field", "field", "field", "budget", "unknown", "missing"]))
    if how == "field":
        field = draw(st.sampled_from(list(TARGET_VALID)))
        doc[field] = draw(bad(TARGET_VALID[field]))
        return doc, field
    if how == "budget":
        kind = draw(st.sampled_from(list(COST_KINDS)))
        ok = (lambda v: v is None or isinstance(v, bool)) if kind in MEASURED else _budget_value_ok
        doc["budgets"] = {**doc.get("budgets", {}), kind: draw(bad(ok))}
        return doc, "budgets"
    if how == "unknown":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in TargetProfile.model_fields))
        doc[key] = draw(JUNK)
        return doc, "unknown field"
    field = draw(st.sampled_from(["name", "weight_bits", "act_bits"]))
    del doc[field]
    return doc, field


@MANY
@given(bad_target_docs())
def test_target_invalid_documents_are_one_line_spec_errors(case):
    doc, names = case
    text = refused(lambda: parse_target(doc, "target t.yaml"), SpecError, doc)
    assert text.startswith("target t.yaml: ") and names in text, (text, doc)


@SOME
@given(st.one_of(JUNK, YAML_TEXT.map(lambda t: ("yaml", t))))
def test_target_arbitrary_documents_give_a_profile_or_one_spec_error(doc):
    def parse():
        return parse_target(yaml_load(doc[1]) if isinstance(doc, tuple) else doc)

    try:
        profile = parse()
    except SpecError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) <= MAX_MESSAGE
        return
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{type(exc).__name__}: {exc} for {doc!r}") from exc
    assert parse_target(profile.model_dump()) == profile


def test_target_silent_coercions_are_refused():
    base = {"name": "t", "weight_bits": [8], "act_bits": [8]}
    for change in ({"weight_bits": [8.0]}, {"weight_bits": ["8"]}, {"weight_bits": [True, 8]}, {"weight_bits": [8, 8]}, {"weight_bits": 8},
                   {"act_bits": [4.0]}, {"name": 5}, {"name": ""}, {"name": None}, {"description": None}, {"cost": 1},
                   {"budgets": {"weight_kib": "5"}}, {"budgets": {"weight_kib": float("nan")}}, {"budgets": {"weight_kib": float("inf")}},
                   {"budgets": {"weight_kib": 0}}, {"budgets": {"weight_kib": -1}}, {"budgets": {"weight_kib": 10**400}},
                   {"budgets": {"latency_ms": 3}}, {"budgets": None}, {"budgets": [1]}, {"budgets": {1: 5}}, {"weight_encoding": "U8"}):
        doc = {**base, **change}
        refused(lambda: parse_target(doc), SpecError, doc)
    refused(lambda: parse_target(yaml_load("name: !!binary aGk=\nweight_bits: [8]\nact_bits: [8]\n")), SpecError)  # bytes are not text
    refused(lambda: parse_target(yaml_load("name: t\nweight_bits: !!set {8: null}\nact_bits: [8]\n")), SpecError)  # a set is not a list


def test_target_budget_booleans_are_not_numbers():
    """Waits on issue 28 item 2 (``weight_kib: true`` read as 1: booleans are not numbers; another branch)."""
    for value in (True, False):
        doc = {"name": "t", "weight_bits": [8], "act_bits": [8], "budgets": {"weight_kib": value}}
        assert "budgets" in refused(lambda: parse_target(doc), SpecError, doc)


def test_target_duplicate_yaml_keys_are_refused(tmp_path):
    """Waits on issue 28 item 2 (duplicate YAML keys are an error; yamlio.py, another branch)."""
    from workbench.core.cost import load_target

    path = tmp_path / "t.yaml"
    path.write_text("name: t\nweight_bits: [8]\nweight_bits: [4]\nact_bits: [8]\n")
    refused(lambda: load_target(path), SpecError)


# ============================================================================= the recipe parser

NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,30}", fullmatch=True)
FACTORY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}(\.[A-Za-z_][A-Za-z0-9_]{0,8}){0,2}:[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
UNIT = st.floats(min_value=0, max_value=1, exclude_max=True, allow_nan=False)
FINITE = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9))


def optional(draw, d: dict, key: str, strategy) -> None:
    if draw(st.booleans()):
        d[key] = draw(strategy)


@st.composite
def task_refs(draw):
    d = {"name": draw(st.sampled_from(list_tasks()))} if draw(st.booleans()) else {"factory": draw(FACTORY)}
    optional(draw, d, "seed", st.integers(0, MAX_SEED))
    optional(draw, d, "epochs", st.none() | st.integers(0, 100_000))
    optional(draw, d, "subset", st.none() | st.lists(st.integers(1, 10**6), min_size=3, max_size=3))
    return d


@st.composite
def ptq_docs(draw):
    d = {}
    optional(draw, d, "calib_samples", st.none() | st.integers(1, 10**6))
    optional(draw, d, "bias_correction", st.booleans())
    optional(draw, d, "equalize_iters", st.integers(0, 100))
    optional(draw, d, "batch_size", st.integers(1, 4096))
    optional(draw, d, "act_equalization", st.none() | st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True))
    optional(draw, d, "weight_rounding", st.sampled_from(WEIGHT_ROUNDING))
    optional(draw, d, "rounding_iters", st.integers(1, 10**5))
    if d.get("weight_rounding") == "adaround":
        optional(draw, d, "rounding_layers", st.none() | st.lists(st.text(min_size=1, max_size=10), max_size=3))
    return d


@st.composite
def qat_docs(draw):
    d = {}
    optional(draw, d, "epochs", st.integers(1, 1000))
    optional(draw, d, "lr", st.floats(min_value=1e-9, max_value=10, allow_nan=False))
    optional(draw, d, "batch_size", st.integers(2, 4096))
    optional(draw, d, "distill", st.booleans())
    optional(draw, d, "temperature", st.floats(min_value=1e-3, max_value=100, allow_nan=False))
    optional(draw, d, "alpha", st.floats(min_value=0, max_value=1))
    optional(draw, d, "patience", st.integers(0, 100))
    optional(draw, d, "seed", st.integers(0, 2**63 - 1))
    return d


@st.composite
def pruning_docs(draw):
    method = draw(st.sampled_from(["structured", "unstructured", "nm"]))
    d = {"method": method}
    if method == "nm":
        m = draw(st.integers(2, 64))
        d["m"], d["sparsity"] = m, draw(st.integers(1, m - 1)) / m
    else:
        optional(draw, d, "sparsity", UNIT)
        d["criterion"] = draw(st.sampled_from(["l1", "l2", "taylor"] + (["bn_scale"] if method == "structured" else [])))
        if draw(st.booleans()):
            d["scope"] = draw(st.sampled_from(["layer", "global"]))
        if d.get("scope") != "global":
            optional(draw, d, "layers", st.lists(st.text(min_size=1, max_size=10), max_size=3))
    optional(draw, d, "ignore", st.lists(st.text(min_size=1, max_size=10), max_size=3))
    optional(draw, d, "finetune_epochs", st.integers(0, 100))
    optional(draw, d, "finetune_lr", st.none() | st.floats(min_value=1e-9, max_value=10))
    optional(draw, d, "seed", st.integers(0, 2**63))
    optional(draw, d, "calib_samples", st.integers(1, 10**5))
    return d


@st.composite
def expectation_docs(draw):
    kind = draw(st.sampled_from(["value", "min", "max", "range"]))
    if kind == "value":
        return {"value": draw(FINITE), "tolerance": draw(st.integers(0, 10) | st.floats(min_value=0, max_value=10))}
    if kind == "range":
        low, high = sorted((draw(FINITE), draw(FINITE)))  # min above max is refused (issue 28)
        return {"min": low, "max": high}
    return {kind: draw(FINITE)}


TOLERANCE_FIELDS = {"min_agreement": UNIT, "max_lsb_diff": st.floats(min_value=0, max_value=1e6), "min_metric": FINITE,
                    "max_ram_bytes": st.integers(0, 2**40), "max_file_bytes": st.integers(0, 2**40),
                    "max_latency_ms_p99": st.floats(min_value=1e-6, max_value=1e6), "max_cpu_ops": st.integers(0, 1000)}


@st.composite
def recipe_docs(draw):
    d = {"task": draw(task_refs())}
    optional(draw, d, "recipe_version", st.just(1))
    optional(draw, d, "name", NAME)
    if draw(st.booleans()):
        d["dataset"] = {}
        optional(draw, d["dataset"], "sha256", st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
        optional(draw, d["dataset"], "source", st.text(max_size=30))
    optional(draw, d, "target", st.sampled_from(list_targets()))
    optional(draw, d, "quantization", spec_docs())
    optional(draw, d, "ptq", ptq_docs())
    optional(draw, d, "pruning", pruning_docs())
    optional(draw, d, "qat", qat_docs())
    if draw(st.booleans()):
        d["export"] = {"formats": ["qcdq"] + draw(st.lists(st.sampled_from(["qonnx", "float", "qcdq"]), max_size=3))}
        optional(draw, d["export"], "weight_encoding", st.sampled_from(["u8", "s8", "auto"]))
        optional(draw, d["export"], "pack", st.sampled_from([None, True, False, "int4", "none"]))
    optional(draw, d, "expected", st.dictionaries(st.sampled_from(EXPECTABLE), expectation_docs(), max_size=4))
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(list_target_names()), unique=True, max_size=3))
        if draw(st.booleans()):
            d["targets"] = names
        else:
            d["targets"] = {n: draw(st.fixed_dictionaries({}, optional=TOLERANCE_FIELDS)) for n in names}
    return d


@SOME
@given(recipe_docs())
def test_recipe_valid_documents_parse_and_round_trip(doc):
    recipe = parse_recipe(doc)
    assert isinstance(recipe, Recipe)
    assert recipe.task.seed == doc["task"].get("seed", 0) and type(recipe.task.seed) is int
    assert recipe.target == doc.get("target") and recipe.name == doc.get("name", "recipe")
    if "quantization" in doc:
        assert_spec_holds(recipe.quantization, doc["quantization"])
    for section in ("ptq", "qat"):
        for k, v in doc.get(section, {}).items():
            held = getattr(getattr(recipe, section), k)
            assert (tuple(v) if isinstance(v, list) else v) == held, (section, k, v, held)
    text = recipe.to_yaml()
    again = parse_recipe(yaml_load(text))
    assert again == recipe and again.to_yaml() == text
    assert parse_recipe(yaml_load(dump(doc))) == recipe


def _yaml_number_ok(lo=None, hi=None, lo_open=True, hi_open=True, optional=False):
    """A finite real in the bounds, or text YAML 1.2 reads as one (documented: ``lr: 1e-4``)."""
    pattern = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")

    def ok(v):
        if v is None:
            return optional
        if isinstance(v, str) and pattern.fullmatch(v):
            v = float(v)
        if not is_real(v):
            return False
        return (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))

    return ok


def _int_ok(lo, hi=None, optional=False):
    return lambda v: (optional and v is None) or (is_int(v) and v >= lo and (hi is None or v <= hi))


def _names_ok(optional):
    return lambda v: (optional and v is None) or (isinstance(v, list) and all(isinstance(n, str) for n in v))


RECIPE_VALID = {
    ("recipe_version",): lambda v: is_int(v) and v == 1,
    ("name",): lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}", v) is not None,
    ("target",): lambda v: v is None or (isinstance(v, str) and bool(v.strip()) and v.isprintable()),
    ("task",): lambda v: False,  # replaced wholesale: junk is never a task
    ("task", "seed"): _int_ok(0, MAX_SEED), ("task", "epochs"): _int_ok(0, 100_000, True),
    ("task", "subset"): lambda v: v is None or (isinstance(v, list) and len(v) == 3 and all(is_int(n) and n >= 1 for n in v)),
    ("dataset", "sha256"): lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None),
    ("dataset", "source"): lambda v: v is None or isinstance(v, str),
    ("ptq", "calib_samples"): _int_ok(1, optional=True), ("ptq", "bias_correction"): lambda v: isinstance(v, bool),
    ("ptq", "equalize_iters"): _int_ok(0), ("ptq", "batch_size"): _int_ok(1),
    ("ptq", "act_equalization"): _yaml_number_ok(0, 1, optional=True),
    ("ptq", "weight_rounding"): lambda v: isinstance(v, str) and v in WEIGHT_ROUNDING, ("ptq", "rounding_iters"): _int_ok(1),
    ("qat", "epochs"): _int_ok(1), ("qat", "lr"): _yaml_number_ok(0), ("qat", "batch_size"): _int_ok(2),
    ("qat", "distill"): lambda v: isinstance(v, bool), ("qat", "temperature"): _yaml_number_ok(0),
    ("qat", "alpha"): _yaml_number_ok(0, 1, False, False), ("qat", "patience"): _int_ok(0), ("qat", "seed"): _int_ok(0, 2**63 - 1),
    ("pruning", "method"): lambda v: isinstance(v, str) and v in ("structured", "unstructured", "nm"),
    ("pruning", "sparsity"): lambda v: is_real(v) and 0 <= v < 1,
    ("pruning", "criterion"): lambda v: isinstance(v, str) and v in ("l1", "l2", "taylor", "bn_scale"),
    ("pruning", "finetune_epochs"): _int_ok(0), ("pruning", "seed"): _int_ok(-(2**63), 2**64 - 1), ("pruning", "calib_samples"): _int_ok(1),
    ("pruning", "finetune_lr"): lambda v: v is None or (is_real(v) and v > 0),
    ("pruning", "layers"): _names_ok(True), ("pruning", "ignore"): _names_ok(False),
    ("export", "formats"): lambda v: isinstance(v, list) and "qcdq" in v and all(isinstance(n, str) and n in EXPORTERS for n in v),
    ("export", "weight_encoding"): lambda v: isinstance(v, str) and v in ("u8", "s8", "auto"),
    ("export", "pack"): lambda v: v is None or (type(v) in (bool, str) and v in (True, False, "int4", "none")),
    ("expected",): lambda v: v == {},
    ("targets",): lambda v: v is None or (isinstance(v, list) and all(isinstance(n, str) and n in list_target_names() for n in v))
    or (isinstance(v, dict) and all(isinstance(n, str) and n in list_target_names() and (t is None or t == {}) for n, t in v.items())),
    **{("targets", "tflite-int8", k): (lambda v, k=k: v is None or _tolerance_ok(k, v)) for k in TOLERANCE_FIELDS},
}


def _tolerance_ok(field, v) -> bool:
    if field in ("max_ram_bytes", "max_file_bytes", "max_cpu_ops"):
        return is_int(v) and v >= 0
    if not is_real(v):
        return False
    return {"min_agreement": 0 <= v <= 1, "max_lsb_diff": v >= 0, "min_metric": True, "max_latency_ms_p99": v > 0}[field]


@st.composite
def bad_recipe_docs(draw):
    doc = draw(recipe_docs())
    how = draw(st.sampled_from(["field"] * 6 + ["unknown", "section-unknown", "missing-task", "section-not-mapping", "expected-key",
                                                "target-name", "pruning-m", "quantization", "quantization", "rounding-layers"]))
    if how == "quantization":  # a spec with one thing wrong, inside the recipe: the same refusal under quantization.
        doc["quantization"], _ = draw(bad_spec_docs())
        return doc, "quantization"
    if how == "rounding-layers":
        doc["ptq"] = {"weight_rounding": "adaround", "rounding_layers": draw(bad(_names_ok(True)))}
        return doc, "ptq"
    if how == "missing-task":
        del doc["task"]
        return doc, "task"
    if how == "unknown":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in Recipe.model_fields))
        doc[key] = draw(JUNK)
        return doc, "unknown field"
    if how == "section-unknown":
        section = draw(st.sampled_from(["task", "dataset", "ptq", "qat", "export", "pruning"]))
        doc.setdefault(section, {} if section != "pruning" else {"method": "structured"})
        doc[section] = {**doc[section], draw(st.sampled_from(["sed", "Seed", "epoch", "formats ", "lr\n", "é", "1"])): draw(JUNK)}
        return doc, section
    if how == "section-not-mapping":
        section = draw(st.sampled_from(["task", "dataset", "ptq", "qat", "export", "pruning", "quantization", "expected"]))
        doc[section] = draw(JUNK.filter(lambda v: not isinstance(v, dict) and (v is not None or section not in ("pruning", "qat"))))
        return doc, section
    if how == "expected-key":
        key = draw(st.text(max_size=12).filter(lambda k: k not in EXPECTABLE))
        doc["expected"] = {**doc.get("expected", {}), key: {"min": 0}}
        return doc, "expected"
    if how == "target-name":
        doc["targets"] = [draw(st.text(max_size=12).filter(lambda k: k not in list_target_names()))]
        return doc, "targets"
    if how == "pruning-m":
        doc["pruning"] = {"method": "nm", "m": draw(bad(lambda v: is_int(v) and 2 <= v <= 64)), "sparsity": 0.5}
        return doc, "pruning"
    path = draw(st.sampled_from(list(RECIPE_VALID)))
    value = draw(bad(RECIPE_VALID[path]))
    if len(path) == 1:
        doc[path[0]] = value
    elif path[0] == "targets":
        doc["targets"] = {path[1]: {path[2]: value}}
    else:
        base = doc.get(path[0]) or ({"method": "structured"} if path[0] == "pruning" else {"name": "digits-cnn"} if path[0] == "task" else {})
        doc[path[0]] = {**base, path[1]: value}
    return doc, path[0]


@MANY
@given(bad_recipe_docs())
def test_recipe_invalid_documents_are_one_line_recipe_errors(case):
    doc, names = case
    text = refused(lambda: parse_recipe(doc), RecipeError, doc)
    assert names in text, (text, doc)


@SOME
@given(st.one_of(JUNK, YAML_TEXT.map(lambda t: ("yaml", t))))
def test_recipe_arbitrary_documents_give_a_recipe_or_one_recipe_error(doc):
    def parse():
        return parse_recipe(loads_yaml(doc[1], "recipe", RecipeError) if isinstance(doc, tuple) else doc)

    try:
        recipe = parse()
    except RecipeError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) <= MAX_MESSAGE
        return
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{type(exc).__name__}: {exc} for {doc!r}") from exc
    assert parse_recipe(yaml_load(recipe.to_yaml())) == recipe


def test_recipe_silent_coercions_are_refused():
    base = {"task": {"name": "digits-cnn"}}
    for change in ({"recipe_version": True}, {"recipe_version": 1.0}, {"recipe_version": "1"}, {"task": {"name": "digits-cnn", "seed": True}},
                   {"task": {"name": "digits-cnn", "seed": 3.0}}, {"task": {"name": "digits-cnn", "seed": "3"}},
                   {"task": {"name": "digits-cnn", "subset": [True, 2, 3]}}, {"task": {"name": "digits-cnn", "epochs": 2.0}},
                   {"expected": {"quant_metric": {"value": True, "tolerance": 0.1}}}, {"expected": {"quant_metric": {"value": 0.9, "tolerance": "0.1"}}},
                   {"expected": {"onnx_agreement": {"min": False}}}, {"pruning": {"m": 4.0}}, {"pruning": {"seed": True}},
                   {"pruning": {"finetune_epochs": "2"}}, {"pruning": {"finetune_lr": float("inf")}}, {"pruning": {"seed": 10**30}},
                   {"targets": {"tflite-int8": {"max_ram_bytes": True}}}, {"targets": {"tflite-int8": {"min_agreement": "0.5"}}},
                   {"targets": {"tflite-int8": {"min_metric": float("nan")}}}, {"targets": {"tflite-int8": {"max_latency_ms_p99": float("inf")}}},
                   {"name": True}, {"target": 5}, {"dataset": {"source": 5}}, {"export": {"pack": 1}}, {"export": {"formats": ("qcdq",)}}):
        doc = {**base, **change}
        refused(lambda: parse_recipe(doc), RecipeError, doc)
    documented = parse_recipe({**base, "qat": {"lr": "1e-4"}})  # YAML 1.1 reads 1e-4 as text; documented as the number
    assert documented.qat.lr == 1e-4


def test_recipe_expectations_nan_and_no_tolerance_are_refused():
    """Waits on issue 28 item 2 (expectations need a tolerance or a bound, NaN anywhere fails; another branch)."""
    base = {"task": {"name": "digits-cnn"}}
    for exp in ({"value": 0.99}, {"value": float("nan"), "tolerance": 0.1}, {"value": 0.9, "tolerance": float("nan")},
                {"min": float("nan")}, {"max": float("nan")}):
        doc = {**base, "expected": {"quant_metric": exp}}
        assert "expected.quant_metric" in refused(lambda: parse_recipe(doc), RecipeError, doc)


def test_recipe_duplicate_yaml_keys_are_refused(tmp_path):
    """Waits on issue 28 item 2 (duplicate YAML keys are an error; yamlio.py, another branch)."""
    from workbench.runs.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("recipe_version: 1\ntask: {name: digits-cnn}\nquantization: {weight_bits: 8}\nquantization: {weight_bits: 4}\n")
    refused(lambda: load_recipe(path), RecipeError)


# ============================================================================= the layer-selector matcher

SEGMENT = st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), st.integers(0, 12).map(str))
PLAIN_NAME = st.lists(SEGMENT, min_size=1, max_size=3).map(".".join)


@st.composite
def model_layers(draw, names=PLAIN_NAME):
    layer_names = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    out = {}
    for n in layer_names:
        kind = draw(st.sampled_from(["Conv1d", "Conv2d", "Linear"]))
        out[n] = (kind, kind != "Linear" and draw(st.booleans()))
    return out


def glob_of(draw, name: str) -> str:
    """A glob derived from ``name`` (it matches at least ``name``)."""
    how = draw(st.sampled_from(["prefix", "suffix", "segment", "char", "all", "class"]))
    if how == "prefix":
        return name[: draw(st.integers(0, len(name)))] + "*"
    if how == "suffix":
        return "*" + name[draw(st.integers(0, len(name))):]
    if how == "segment":
        parts = name.split(".")
        parts[draw(st.integers(0, len(parts) - 1))] = "*"
        return ".".join(parts)
    if how == "char":
        i = draw(st.integers(0, len(name) - 1))
        return name[:i] + "?" + name[i + 1:]
    if how == "class":
        i = draw(st.integers(0, len(name) - 1))
        return name[:i] + f"[{name[i]}]" + name[i + 1:] if name[i] not in "]!^\\" else name + "*"
    return "*"


@st.composite
def selector_cases(draw, names=PLAIN_NAME):
    layers = draw(model_layers(names))
    names_ = list(layers)
    selectors = {}
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["exact", "exact", "glob", "glob", "type", "type", "missing", "junk-type", "nomatch-glob"]))
        if kind == "exact":
            sel = draw(st.sampled_from(names_))
        elif kind == "glob":
            sel = glob_of(draw, draw(st.sampled_from(names_)))
        elif kind == "type":
            sel = "type:" + draw(st.sampled_from(SELECTOR_TYPES))
        elif kind == "missing":
            sel = draw(PLAIN_NAME)
        elif kind == "junk-type":
            sel = "type:" + draw(st.sampled_from(["conv2d", "Embedding", "", "Linear ", "*", "BatchNorm2d"]))
        else:
            sel = "zz*" + draw(SEGMENT)
        selectors[sel] = {"weight_bits": draw(st.sampled_from(BITS)), **({"act_bits": draw(st.sampled_from(BITS))} if draw(st.booleans()) else {})}
    default = {"weight_bits": draw(st.sampled_from(BITS)), "act_bits": draw(st.sampled_from(BITS))}
    return layers, {**default, "layers": selectors}


def is_glob(sel: str) -> bool:
    return any(c in sel for c in "*?[")


def expected_resolution(layers: dict, doc: dict):
    """The documented rule, written independently: a selector that is a layer's exact name selects
    that layer (literally, even holding glob characters; if read as a glob it would also match
    another layer, that is an error naming both); ``type:`` selects by type, other selectors are
    globs (fnmatch); every selector must match; type < glob < exact name, later wins among equals.
    Returns ``(None, names the error must hold)`` or ``({layer: (weight_bits, act_bits)}, None)``."""
    def kind(sel):
        return 0 if sel.startswith("type:") else 2 if sel in layers or not is_glob(sel) else 1

    def matches(sel, name):
        k = kind(sel)
        if k == 0:
            wanted = sel[5:]
            return wanted == layers[name][0] or (wanted == "depthwise" and layers[name][1])
        return fnmatch.fnmatchcase(name, sel) if k == 1 else sel == name

    errors = []
    for sel in doc["layers"]:
        if sel.startswith("type:") and sel[5:] not in SELECTOR_TYPES or not any(matches(sel, n) for n in layers):
            errors.append(())
        elif kind(sel) == 2 and is_glob(sel):
            others = [n for n in layers if n != sel and fnmatch.fnmatchcase(n, sel)]
            if others:
                errors.append((sel, others[0]))
    if errors:
        return None, (errors[0] if len(errors) == 1 else ())
    order = sorted(doc["layers"], key=kind)
    out = {}
    for name in layers:
        w, a = doc["weight_bits"], doc["act_bits"]
        for sel in order:
            if matches(sel, name):
                o = doc["layers"][sel]
                w, a = o.get("weight_bits", w), o.get("act_bits", a)
        out[name] = (None if w == "float" else w, None if a == "float" else a)
    return out, None


def check_selectors(layers, doc):
    spec = QuantSpec.parse(doc)
    want, names = expected_resolution(layers, doc)
    if want is None:
        text = refused(lambda: resolve(spec, layers), SpecError, (layers, doc))
        assert text.startswith("layers.") or names, text
        assert all(n in text for n in names), (text, names)
        return
    got = resolve(spec, layers)
    assert list(got) == list(layers) and all(isinstance(v, LayerQuant) for v in got.values())
    assert {n: (q.weight_bits, q.act_bits) for n, q in got.items()} == want, (layers, doc)


@MANY
@given(selector_cases())
def test_selector_matcher_follows_the_documented_precedence(case):
    check_selectors(*case)


@SOME
@given(model_layers(), st.dictionaries(st.text(max_size=12), st.fixed_dictionaries({"weight_bits": st.sampled_from(BITS)}), max_size=4))
def test_selector_matcher_random_selectors_resolve_or_raise_one_spec_error(layers, selectors):
    spec = QuantSpec.parse({"layers": selectors})
    try:
        got = resolve(spec, layers)
    except SpecError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) <= MAX_MESSAGE
        return
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{type(exc).__name__}: {exc} for {layers!r}, {selectors!r}") from exc
    assert list(got) == list(layers)


GLOB_NAME = st.lists(st.one_of(SEGMENT, st.sampled_from(["conv[0]", "a*", "b?", "[x]", "f[!a]", "conv0", "a", "x"])), min_size=1, max_size=2).map(".".join)


@st.composite
def literal_glob_cases(draw):
    """A model with a layer whose name holds glob characters, and a selector that is that name."""
    layers, doc = draw(selector_cases(GLOB_NAME))
    name = draw(st.sampled_from(["conv[0]", "a*", "b?", "[x]", "f[!a]", "a*.b?", "conv[0].x", "*"]))
    layers = {**layers, name: layers.get(name, (draw(st.sampled_from(["Conv2d", "Linear"])), False))}
    selectors = list(doc["layers"].items())
    selectors.insert(draw(st.integers(0, len(selectors))), (name, {"weight_bits": draw(st.sampled_from(BITS))}))
    return layers, {**doc, "layers": dict(selectors)}


@MANY
@given(literal_glob_cases())
def test_selector_exact_name_with_glob_characters_is_literal(case):
    """Waits on issue 28 item 2 (literal layer names win over globs; another branch): layers whose
    names hold glob characters, under the same documented rule."""
    check_selectors(*case)


def test_selector_conv_bracket_zero_selects_only_that_layer():
    """The audit's case (waits on issue 28 item 2, another branch): ``conv[0]`` is a layer's exact
    name and ``conv0`` another layer: reading it as a glob would hit ``conv0``, so it is an error
    naming both (and ``conv[0]`` alone, with no ``conv0``, selects it)."""
    check_selectors({"conv[0]": ("Conv2d", False), "conv0": ("Conv2d", False)}, {"weight_bits": 8, "act_bits": 8, "layers": {"conv[0]": {"weight_bits": 4}}})
    check_selectors({"conv[0]": ("Conv2d", False), "fc": ("Linear", False)}, {"weight_bits": 8, "act_bits": 8, "layers": {"conv[0]": {"weight_bits": 4}}})


@pytest.mark.parametrize("text", ["*", "type:*", "[", "[!]", "]", "a[", "\\", "type:", ""])
def test_selector_odd_selectors_are_one_line_errors_or_match(text):
    layers = {"a": ("Linear", False), "b.c": ("Conv2d", True)}
    spec = QuantSpec.parse({"layers": {text: {"weight_bits": 4}}})
    try:
        resolve(spec, layers)
    except SpecError as exc:
        assert len(str(exc).splitlines()) == 1
