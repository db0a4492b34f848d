"""growlm sweep end to end on the tiny recipe: scratch + 2 growth timings, compare, fit, skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from growlm.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path, capsys):
    recipe = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    recipe["data"]["sources"] = [str(REPO / "tests" / "fixtures" / "shakespeare")]
    recipe["run"].update(eval_every=4, eval_sequences=4, checkpoint_every=0)
    recipe["stages"][0]["tokens"] = 2048
    recipe["stages"][1]["tokens"] = 3072
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "sweep"
    argv = ["sweep", str(base), "--d", "1024,2048", "--g", "2", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "trained 3 run(s)" in text
    names = ["base-D5120-scratch", "base-D5120-g2-d1024", "base-D5120-g2-d2048"]
    for name in names:
        assert (out / name / "final" / "config.json").is_file()
    # iso-FLOP: every grown run is given the scratch run's compute (to a step's rounding)
    results = json.loads((out / "sweep.json").read_text())
    scratch_c = results["runs"][names[0]]["compute"]
    summary = json.loads((out / "compare" / "base-D5120" / "summary.json").read_text())
    for name in names[1:]:
        assert summary["runs"][name]["final_flops"] == pytest.approx(scratch_c, rel=0.1)
        assert summary["runs"][name]["stages"] == ["base", "grown"]
        assert "speedup_flops" in results["runs"][name]
    gl = json.loads((out / "guideline.json").read_text())
    assert gl["growth_factor"] == 2 and gl["extra"]["fitted"] == ["gamma"]
    assert (out / "compare" / "base-D5120" / "loss_vs_flops.png").stat().st_size > 5000
    assert "Guideline fit" in (out / "report.md").read_text()
    # a second call trains nothing: finished runs are skipped
    assert main([*argv, "--no-plots"]) == 0
    assert "trained 0 run(s), 3 already finished" in capsys.readouterr().out


def test_sweep_dry_run_writes_valid_recipes(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [
        "sweep",
        str(REPO / "recipes" / "tiny.yaml"),
        "--d",
        "4096",
        "--g",
        "2,4",
        "--sizes",
        "s:hidden_size=64",
        "--tokens",
        "40960",
        "--out",
        str(out),
        "--dry-run",
    ]
    assert main(argv) == 0
    from growlm.train.recipe import load_recipe

    files = sorted((out / "recipes").glob("*.yaml"))
    assert len(files) == 3
    g4 = load_recipe(out / "recipes" / "s-D40960-g4-d4096.yaml")
    assert g4.model.config["num_hidden_layers"] == 1 and g4.stages[0].tokens == 4096
    assert g4.stages[1].grow is not None and g4.stages[1].grow.params == {"factor": 4}
    scratch = load_recipe(out / "recipes" / "s-D40960-scratch.yaml")
    assert scratch.model.config["num_hidden_layers"] == 4 and len(scratch.stages) == 1


def test_sweep_bad_factor_one_line(tmp_path, capsys):
    argv = [
        "sweep",
        str(REPO / "recipes" / "tiny.yaml"),
        "--d",
        "4096",
        "--g",
        "3",
        "--out",
        str(tmp_path / "s"),
        "--dry-run",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "divide 4" in err and err.count("\n") == 1
