"""Property-based tests: operator parameters either plan a valid growth or raise InvalidGrowth."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from growlm.errors import GrowlmError, InvalidGrowth
from growlm.ops import depth
from growlm.ops.axes import Shape, axis_maps, head_maps

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 40), st.floats(), st.text(max_size=8)
)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 24), factor=anything)
def test_stack_and_interleave(n, factor):
    for fn in (depth.stack, depth.interleave):
        try:
            m = fn(n, factor)
        except InvalidGrowth:
            assert not (isinstance(factor, int) and not isinstance(factor, bool) and factor >= 2)
            continue
        assert len(m) == n * factor
        assert sorted({ls.src for ls in m}) == list(range(n))
        assert all(m.count(ls) == factor for ls in m)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 16), layers=st.lists(st.integers(-3, 20), max_size=40))
def test_explicit_layers(n, layers):
    try:
        m = depth.explicit(n, ",".join(map(str, layers)))
    except InvalidGrowth:
        assert not layers or len(layers) < n or any(not 0 <= i < n for i in layers)
        return
    assert [ls.src for ls in m] == layers


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40),
    target=st.integers(0, 120),
    placement=st.sampled_from(["interleave", "append", "middle"]),
)
def test_new_blocks_reach_target_depth(n, target, placement):
    try:
        m = depth.with_new_blocks(n, "zero", num_layers=target, placement=placement)
    except InvalidGrowth:
        assert target <= n or placement == "middle"
        return
    assert len(m) == target
    copies = [ls.src for ls in m if ls.kind == "copy"]
    assert copies == list(range(n))  # source order kept, every layer once
    assert all(ls.src == m[j - 1].src for j, ls in enumerate(m) if ls.kind == "zero")


@settings(max_examples=150, deadline=None)
@given(
    a=st.integers(1, 8),
    g=st.integers(1, 4),
    ka=st.integers(1, 4),
    kg=st.integers(1, 4),
    copy=st.booleans(),
)
def test_head_maps_preserve_groups(a, g, ka, kg, copy):
    """Every source query head appears and sits with (a copy of) its own kv head."""
    src = Shape(hidden=8 * a * g, ffn=16, heads=a * g, kv_heads=a, head_dim=8)
    new = Shape(hidden=8 * a * g * ka, ffn=16, heads=a * ka * kg * g, kv_heads=a * ka, head_dim=8)
    try:
        q, kv = head_maps(src, new, copy)
    except GrowlmError:
        return
    g_src, g_new = src.heads // src.kv_heads, new.heads // new.kv_heads
    assert {h for h in q if h >= 0} == set(range(src.heads))
    for h, s in enumerate(q):
        if s >= 0:
            assert kv[h // g_new] == s // g_src
    maps = axis_maps(src, new, copy)
    assert maps["q"].new_size == new.heads * 8 and maps["kv"].new_size == new.kv_heads * 8
    if copy:
        assert not maps["q"].has_new and not maps["hidden"].has_new
