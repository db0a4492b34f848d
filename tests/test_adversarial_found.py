"""Findings of a fresh adversarial pass over every command (issue 13), one test each: the
behaviour the issue asks for (one line, exit 2, nothing lost). Each failed before its fix; the
ids (D = data loss, T = traceback, M = misleading) are those of the pass's write-up, summarised in
docs/reliability.md.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from tiny_models import save_model

import growlm.cli as cli

REPO = Path(__file__).parents[1]
TINY = REPO / "recipes" / "tiny.yaml"


def _run(argv: list[str]) -> int:
    """The CLI in-process; an exception that escapes main counts as a traceback (rc 1)."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    except Exception:
        return 1


# D1 (fixed): --force wipes user files inside a growlm output
def test_force_keeps_user_files_in_owned_out(tmp_path: Path) -> None:
    src = save_model("llama", tmp_path / "src")
    out = tmp_path / "out"
    assert _run(["grow", str(src), str(out), "--op", "stack", "--factor", "2"]) == 0
    (out / "work").mkdir()
    (out / "work" / "thesis.tex").write_text("precious")
    rc = _run(["grow", str(src), str(out), "--op", "stack", "--factor", "2", "--force"])
    assert (out / "work" / "thesis.tex").read_text() == "precious", rc


# D2 (fixed): SRC whose files link into OUT is destroyed by --force
def test_force_refuses_source_files_linked_into_out(tmp_path: Path) -> None:
    src = save_model("llama", tmp_path / "src")
    out = tmp_path / "out"
    assert _run(["grow", str(src), str(out), "--op", "stack", "--factor", "2"]) == 0
    farm = tmp_path / "farm"
    farm.mkdir()
    for f in out.iterdir():
        if f.name != "growth.json":
            os.symlink(f, farm / f.name)
    before = (out / "model.safetensors").read_bytes()
    rc = _run(["grow", str(farm), str(out), "--op", "stack", "--factor", "2", "--force"])
    assert rc == 2
    assert (farm / "model.safetensors").read_bytes() == before


# D3 (fixed): plan --write-recipe overwrites its own --model recipe
def test_plan_write_recipe_over_its_model(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    text = TINY.read_text().replace("../tests/fixtures", str(REPO / "tests" / "fixtures"))
    recipe.write_text(text + "# my notes\n")
    argv = ["plan", "--model", str(recipe), "--tokens", "1e12", "--write-recipe", str(recipe)]
    rc = _run(argv)
    assert recipe.read_text().endswith("# my notes\n"), rc


# T1 (fixed): --shard-size infGB raises OverflowError
def test_shard_size_infinite(tmp_path: Path) -> None:
    src = save_model("llama", tmp_path / "src")
    argv = ["grow", str(src), str(tmp_path / "o"), "--op", "stack", "--factor", "2"]
    assert _run([*argv, "--shard-size", "infGB"]) == 2
    assert not (tmp_path / "o").exists()


# T2 (fixed): plan --guideline on a binary file: UnicodeDecodeError
def test_plan_guideline_binary(tmp_path: Path) -> None:
    g = tmp_path / "g.json"
    g.write_bytes(b"\xc8\xff\x00\x01")
    assert _run(["plan", "--params", "7B", "--tokens", "1T", "--guideline", str(g)]) == 2


# T3 (fixed): compare on runs whose val_loss is NaN/inf: ValueError
def test_compare_non_finite_losses(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"step": 1, "stage": "base", "tokens": 100, "flops": 1e9, "val_loss": math.nan},
        {"step": 2, "stage": "base", "tokens": 200, "flops": 2e9, "val_loss": math.inf},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "recipe.yaml").write_text(TINY.read_text())
    assert _run(["compare", str(run), str(run), "--out", str(tmp_path / "cmp")]) == 2


# T4 (fixed): sweep --sizes with an invalid config: traceback
def test_sweep_invalid_size_config(tmp_path: Path) -> None:
    argv = ["sweep", str(TINY), "--d", "5e3", "--g", "2", "--out", str(tmp_path / "s")]
    assert _run([*argv, "--dry-run", "--sizes", "s:hidden_size=63"]) == 2


# T5 (fixed): demo --scale nan: ValueError
def test_demo_scale_nan(tmp_path: Path) -> None:
    assert _run(["demo", "--scale", "nan", "--out", str(tmp_path / "d")]) == 2


# D4 (fixed): --force on a symlinked OUT replaced the link and left hidden debris for ever
def test_force_refuses_a_symlinked_out(tmp_path: Path) -> None:
    src = save_model("llama", tmp_path / "src")
    real = tmp_path / "real"
    assert _run(["grow", str(src), str(real), "--op", "stack", "--factor", "2"]) == 0
    link = tmp_path / "link"
    link.symlink_to(real)
    rc = _run(["grow", str(src), str(link), "--op", "stack", "--factor", "3", "--force"])
    assert rc == 2 and link.is_symlink()
    assert json.loads((real / "growth.json").read_text())["out_layers"] == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# M9 (fixed): OUT = the current folder was replaced (the process's cwd deleted under it)
def test_force_refuses_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    src = save_model("llama", tmp_path / "src")
    out = tmp_path / "out"
    assert _run(["grow", str(src), str(out), "--op", "stack", "--factor", "2"]) == 0
    monkeypatch.chdir(out)
    assert _run(["grow", str(src), ".", "--op", "stack", "--factor", "3", "--force"]) == 2
    assert json.loads((out / "growth.json").read_text())["out_layers"] == 6


# M4 (fixed): eval scored a BERT encoder as if it were a language model
def test_eval_refuses_an_encoder(tmp_path: Path, capsys) -> None:
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)  # fmt: skip
    BertModel(config).save_pretrained(str(bert))
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 20)
    assert _run(["eval", str(bert), "--data", str(text)]) == 2
    assert "not a causal language model" in capsys.readouterr().err


# second pass
# D5 (fixed): demo --out into a user's folder overwrote its summary.json / plot
def test_demo_refuses_a_folder_of_other_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": 1}')
    (out / "notes.txt").write_text("x")
    assert _run(["demo", "--out", str(out), "--scale", "0.01"]) == 2
    assert "holds files the demo did not write" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == '{"mine": 1}'
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json"]


# T7 (fixed): a .gguf with the right magic but a truncated header raised struct.error
def test_truncated_gguf_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00\x05")
    assert _run(["grow", str(bad), str(tmp_path / "o"), "--op", "stack", "--factor", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# T8 (fixed): 6 N D overflowing to inf divided by zero
def test_plan_with_sizes_that_overflow(capsys) -> None:
    assert _run(["plan", "--params", "1e200", "--tokens", "1e200"]) == 2
    assert "overflow" in capsys.readouterr().err


# T9 (fixed): a scaling fit with inf (1e400) or huge exponents
@pytest.mark.parametrize(
    "fit",
    [
        '{"tokens_per_param": 1e400}',
        '{"E": 1.7, "A": 400, "B": 400, "alpha": 1e308, "beta": 1e308}',
    ],
)
def test_plan_scaling_fit_out_of_range(fit: str, tmp_path: Path) -> None:
    f = tmp_path / "fit.json"
    f.write_text(fit)
    assert _run(["plan", "--params", "50M", "--tokens", "10M", "--scaling", str(f)]) == 2


# third pass
# D7 (fixed): fit --out replaced any existing file
def test_fit_out_refuses_an_existing_file(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    run = tmp_path / "r"
    run.mkdir()
    rows = [{"step": i, "stage": "s", "tokens": i, "flops": i * 1e9, "val_loss": 5.0 - i / 10}
            for i in range(1, 6)]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _run(["fit", str(run), str(run), "--out", str(notes)]) == 2
    assert notes.read_text() == "my notes"


# D6 (fixed): compare --out into a folder of the user's files overwrote report.md
def test_compare_out_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "report.md").write_text("# mine")
    run = tmp_path / "r"
    run.mkdir()
    rows = [{"step": i, "stage": "s", "tokens": i, "flops": i * 1e9, "val_loss": 5.0 - i / 10}
            for i in range(1, 6)]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _run(["compare", str(run), str(run), "--out", str(proj)]) == 2
    assert (proj / "report.md").read_text() == "# mine"


# T10 / T11 (fixed): a path that is not UTF-8, a recipe that is not text
def test_non_utf8_path_and_recipe_are_one_line(tmp_path: Path, capsys) -> None:
    src = save_model("llama", tmp_path / "src")
    bad_out = os.fsencode(tmp_path) + b"/o\xff"
    rc = _run(["grow", str(src), os.fsdecode(bad_out), "--op", "stack", "--factor", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "UTF-8" in err, err
    assert not os.path.exists(bad_out)
    recipe = tmp_path / "bin.yaml"
    recipe.write_bytes(b"\xc8\xff\x00binary")
    assert _run(["train", str(recipe), "--out", str(tmp_path / "t")]) == 2
    assert "UTF-8" in capsys.readouterr().err
