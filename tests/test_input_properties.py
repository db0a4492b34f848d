"""Property-based tests of everything a user types: recipes (random ``--set key=value``, random
YAML, random edits of a valid recipe) either load or raise InvalidRecipe, and operator
parameters either plan a growth or raise the typed growth error; never another exception."""

from __future__ import annotations

import copy
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from growlm.errors import InvalidGrowth, InvalidRecipe, UnknownOperator
from growlm.io.checkpoint import SourceCheckpoint
from growlm.ops.planning import plan_checkpoint
from growlm.ops.registry import OPERATORS, get_operator_entry
from growlm.train.recipe import Recipe, load_recipe, recipe_from_dict
from growlm.train.schema import describe

RECIPES = Path(__file__).parents[1] / "recipes"
TINY_RAW = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
KEYS = sorted({key.replace("[]", "") for key, *_ in describe(Recipe)})
SEGMENTS = sorted({part for key in KEYS for part in key.split(".")} | {"base", "grown", "0", "1"})
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(SEGMENTS), scalars), inner, max_size=4),
    ),
    max_leaves=12,
)
# what a user types after "=": numbers, words, YAML flow collections, and plain junk
value_text = st.one_of(
    st.sampled_from(
        [
            "1e-3",
            "-1",
            "0",
            "1e400",
            ".inf",
            ".nan",
            "[]",
            "{}",
            "[0.9]",
            "null",
            "true",
            "stack",
            "{op: stack, factor: 2}",
            "{op: nope}",
            "../x",
            "a/b",
            "2024-01-01",
            "'7'",
        ]
    ),
    st.text(string.printable, max_size=16),
    values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
)
dotted = st.lists(
    st.one_of(st.sampled_from(SEGMENTS), st.text(string.ascii_letters + "_-0123", max_size=6)),
    min_size=1,
    max_size=4,
).map(".".join)
overrides = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.one_of(st.sampled_from(KEYS), dotted), value_text),
        st.text(max_size=20),  # not even key=value
    ),
    max_size=4,
)


def _loads_or_invalid(raw: Any, sets: list[str]) -> Recipe | None:
    try:
        return recipe_from_dict(raw, sets, base_dir=RECIPES)
    except InvalidRecipe as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return None


@FAST
@given(sets=overrides)
@example(sets=["stages.grown.grow={op: stack, 1: 2}"])
@example(sets=["stages.base.tokens=1e400"])
@example(sets=["optim.lr=.nan"])
@example(sets=["stages.0={}"])
def test_random_overrides_load_or_raise_invalid_recipe(sets):
    recipe = _loads_or_invalid(copy.deepcopy(TINY_RAW), sets)
    if recipe is not None:
        assert recipe.stages and all(s.tokens > 0 for s in recipe.stages)
        assert recipe.optim.lr > 0


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


TINY_PATHS = _paths(TINY_RAW)


@FAST
@given(edits=st.lists(st.tuples(st.sampled_from(TINY_PATHS), values), min_size=1, max_size=3))
@example(edits=[(("stages",), 1)])  # found by hypothesis in CI: a TypeError before the fix
def test_random_edits_of_a_valid_recipe_load_or_raise_invalid_recipe(edits):
    raw = copy.deepcopy(TINY_RAW)
    for path, value in edits:
        _set(raw, path, value)
    _loads_or_invalid(raw, [])


def _set(node: Any, path: tuple, value: Any) -> None:
    """Replace the value at ``path`` if it still exists (an earlier edit may have removed it)."""
    for depth, part in enumerate(path):
        exists = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        )
        if not exists:
            return
        if depth == len(path) - 1:
            node[part] = value
        else:
            node = node[part]


@FAST
@given(raw=values)
@example(raw={"data": {"sources": ["x"]}, "stages": [{"name": "a", "tokens": 1}], 3: 4})
@example(raw={"data": {"sources": ["x"]}, "stages": [{"name": "a", "tokens": True}]})
def test_random_mappings_load_or_raise_invalid_recipe(raw):
    _loads_or_invalid(raw, [])


@settings(max_examples=60, deadline=None)
@given(text=st.text(string.printable, max_size=60))
@example(text="a: [1,\n b: }")
@example(text="- 1\n- 2")
@example(text="data: !!python/object/apply:os.system ['true']")
def test_random_yaml_text_loads_or_raises_invalid_recipe(text, tmp_path_factory):
    file = tmp_path_factory.getbasetemp() / "random.yaml"
    file.write_text(text)
    try:
        load_recipe(file)
    except InvalidRecipe as exc:
        assert "\n" not in str(exc), str(exc)


# ---- operator parameters ------------------------------------------------------------------
NAMES = sorted({n for op in OPERATORS for n in (op.name, *op.aliases)})
PARAMS = sorted({p.name for op in OPERATORS for p in op.params})
op_text = st.one_of(
    st.sampled_from(NAMES),
    st.builds(lambda a, b: f"{a}+{b}", st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.text(string.ascii_letters + "-_+", max_size=12),
)
param_value = st.one_of(
    st.integers(-3, 80),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.digits + ",- a", max_size=10),
    st.lists(st.integers(-2, 8), max_size=8),
)
op_params = st.dictionaries(
    st.one_of(st.sampled_from(PARAMS), st.text(string.ascii_lowercase + "_", max_size=8)),
    param_value,
    max_size=4,
)


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return SourceCheckpoint(tiny_dir("llama"))  # 3 layers, hidden 32, 4 heads, 2 kv heads


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=op_text, params=op_params)
@example(op="stack", params={"factor": 2.5})
@example(op="stack", params={"factor": True})
@example(op="layers", params={"layers": [0, 1, 2, 2]})
@example(op="zero-depth", params={"num_layers": 5, "placement": 3})
@example(op="direct-width", params={"hidden_size": "64"})
@example(op="direct-width", params={"num_heads": 0})
def test_random_operator_parameters_plan_or_raise_invalid_growth(llama, op, params):
    try:
        plan = plan_checkpoint(llama, op, params, seed=0)
    except UnknownOperator:
        assert any(get_operator_entry(part) is None for part in op.split("+")), op
        return
    except InvalidGrowth as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert plan.out_layers >= plan.src_layers == 3
    assert len(plan.layer_map) == plan.out_layers
    assert {m["src"] for m in plan.layer_map} <= set(range(3))


VALID = [
    ("stack", {"factor": 2}, 6),
    ("stack", {"factor": 4}, 12),
    ("interleave", {"factor": 3}, 9),
    ("layers", {"layers": "0,1,2,2,1"}, 5),
    ("solar", {"drop": 1}, 4),
    ("zero-depth", {"num_layers": 5, "placement": "append"}, 5),
    ("random-depth", {"factor": 2}, 6),
    ("direct-width", {"hidden_size": 64}, 3),
    ("zero-width", {"intermediate_size": 96}, 3),
    ("stack+zero-width", {"factor": 2, "hidden_size": 64}, 6),
]


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(VALID), seed=st.integers(0, 2**31 - 1))
def test_valid_operator_parameters_plan(llama, case, seed):
    op, params, layers = case
    plan = plan_checkpoint(llama, op, dict(params), seed=seed)
    assert plan.out_layers == layers
    assert sorted({m["src"] for m in plan.layer_map}) == [0, 1, 2]
