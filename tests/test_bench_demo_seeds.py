"""bench/demo_seeds.py: every seed enters the statistics; an arm that never reached scratch's
final loss enters at its FLOPs bound, which marks the mean and interval as upper bounds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("demo_seeds", ROOT / "bench" / "demo_seeds.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _seed(speedup, alone_speedup, g_flops=8e12, alone_loss=3.5):
    return {
        "scratch_final_val_loss": 3.6, "g_stack_final_val_loss": 3.4,
        "scratch_flops": 1e13, "g_stack_flops": g_flops, "speedup_flops": speedup,
        "small_alone": {"final_val_loss": alone_loss, "flops": 1e13,
                        "speedup_flops": alone_speedup},
    }  # fmt: skip


def test_all_reached_gives_plain_t_interval():
    s = _module().summarise([_seed(0.5, 1.0), _seed(0.7, 2.0), _seed(0.9, 3.0)])
    g = s["g_stack_speedup_flops"]
    assert g["mean"] == pytest.approx(0.7) and g["sd"] == pytest.approx(0.2)
    half = 4.303 * 0.2 / 3**0.5  # t(0.975, df=2)
    assert g["t95"] == pytest.approx([0.7 - half, 0.7 + half])
    assert not g["upper_bound"] and s["small_alone_speedup_flops"]["mean"] == pytest.approx(2.0)


def test_a_seed_that_never_reached_enters_at_its_bound():
    s = _module().summarise([_seed(0.5, 1.0), _seed(None, 1.0, g_flops=1e13 / 1.25)])
    g = s["g_stack_speedup_flops"]
    assert g["seeds"] == 2 and g["reached"] == 1 and g["upper_bound"]
    assert g["entered_as"] == [0.5, pytest.approx(0.25)]  # C_scratch / C_final - 1
    assert g["mean"] == pytest.approx(0.375)


def test_demo_without_control_has_no_small_alone_statistics():
    runs = [{**_seed(0.5, None), "small_alone": None}, {**_seed(0.6, None), "small_alone": None}]
    s = _module().summarise(runs)
    assert s["small_alone_speedup_flops"]["mean"] is None
    assert s["small_alone_final_val_loss"]["mean"] is None
