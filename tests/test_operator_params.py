"""Operator parameters are declared once (growlm/ops/registry.py, growlm/ops/params.py) and the
``growlm grow`` flags, ``growlm ops`` and the checks come from those declarations."""

from __future__ import annotations

import argparse

import pytest

from growlm.cli import build_parser, main
from growlm.errors import InvalidGrowth
from growlm.ops.params import FACTOR, check_params, with_defaults
from growlm.ops.registry import OPERATORS, all_params, get_operator

# flags of `growlm grow` that are not operator parameters: how it runs, not what it does
OPTION_FLAGS = {
    "-h",
    "--help",
    "--op",
    "--router-data",
    "--dtype",
    "--data",
    "--seq-len",
    "--batch-size",
    "--dry-run",
    "--check",
    "--json",
    "--force",
    "--seed",
    "--shard-size",
}


def _grow_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["grow"]


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


def test_grow_flags_are_the_declared_parameters():
    flags = _flags(_grow_parser())
    declared = {p.flag: p for op in OPERATORS if not op.recipe_only for p in op.params}
    assert declared, "the registry declares parameters"
    assert "--coef-scale" not in flags  # mixture-growth's: it grows template models in training
    assert "mixture-growth" not in (flags["--factor"].help or "")
    assert set(declared) <= set(flags)  # every declared parameter has its flag
    assert set(flags) - OPTION_FLAGS == set(declared)  # every other flag is a declared one
    for flag, p in declared.items():
        action = flags[flag]
        assert action.dest == p.name and action.default is None, flag
        assert p.help in (action.help or ""), flag
        if p.constraint is not None and p.constraint.choices:
            assert tuple(action.choices or ()) == p.constraint.choices, flag


def test_grow_help_names_every_declared_flag(capsys):
    with pytest.raises(SystemExit):
        main(["grow", "--help"])
    out = capsys.readouterr().out
    for name, decls in all_params().items():
        assert decls[0].flag in out, name


def test_one_name_one_type():
    for name, decls in all_params().items():
        assert len({d.type for d in decls}) == 1, name


def test_ops_lists_each_operators_parameters(capsys):
    main(["ops"])
    out = capsys.readouterr().out
    assert "--factor G (required; an integer >= 2)" in out
    assert "--placement STR (one of interleave, append; default interleave)" in out
    assert "--router-init STR (one of zero, random, hidden; default random)" in out
    assert "[a recipe growth stage only]" in out
    assert "recipe keys: factor N (required; an integer >= 2), coef_scale FLOAT" in out


def test_the_check_of_the_declarations():
    stack = get_operator("stack")
    assert check_params([stack], {"factor": 2, "layers": None}) == {"factor": 2}
    with pytest.raises(InvalidGrowth, match=r"^--factor must be an integer >= 2, got 0$"):
        check_params([stack], {"factor": 0})
    with pytest.raises(InvalidGrowth, match=r"^direct-depth needs --factor G \(an integer >= 2\)$"):
        check_params([stack], {})
    with pytest.raises(InvalidGrowth, match=r"^--drop does not apply to direct-depth"):
        check_params([stack], {"factor": 2, "drop": 1})
    for bad in (True, 2.0, "2", [2], float("nan")):
        with pytest.raises(InvalidGrowth):
            FACTOR.check(bad)
    assert with_defaults(get_operator("zero-depth"), {"factor": 2}) == {
        "factor": 2,
        "placement": "interleave",
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--op", "top", "--copies", "0"], "--copies must be an integer >= 1, got 0"),
        (["--op", "midas", "--block", "-1"], "--block must be an integer >= 1, got -1"),
        (["--op", "solar", "--drop", "-1"], "--drop must be an integer >= 0, got -1"),
        (
            ["--op", "upcycle", "--experts", "4", "--top-k", "2", "--granularity", "0"],
            "--granularity must be an integer >= 1, got 0",
        ),
    ],
)
def test_zero_and_negative_values_are_refused_in_one_line(tiny_dir, tmp_path, capsys, args, needle):
    code = main(["grow", str(tiny_dir("llama")), str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {needle}"
    assert not (tmp_path / "out").exists()


def test_size_bounds_know_operators_by_any_registry_name(tiny_dir, capsys):
    """clone-width's --factor widens (bounded as a width) under its alias too."""
    code = main(
        ["grow", str(tiny_dir("llama")), "--op", "hypercloning", "--factor", "100000000",
         "--dry-run"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "clone-width --factor 100000000: the hidden size would pass" in err, err


def test_the_python_api_checks_declared_types_before_anything_reads_them(tiny_dir, tmp_path):
    """growlm.grow() with a value of the wrong type: one line (it was a TypeError from the size
    bounds), and MixtureGrowth on a checkpoint is refused before any bound is computed."""
    from growlm.grow import grow
    from growlm.ops.mixture_growth import CHECKPOINT_REFUSAL

    src, out = tiny_dir("llama"), tmp_path / "out"
    with pytest.raises(InvalidGrowth, match=r"^--hidden-size must be a positive integer, got .128"):
        grow(src, out, "direct-width", {"hidden_size": "128"})
    with pytest.raises(InvalidGrowth) as info:
        grow(src, out, "mixture-growth", {"factor": 64})
    assert str(info.value) == CHECKPOINT_REFUSAL
    assert not out.exists()
