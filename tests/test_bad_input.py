"""Every bad input: one clear line, a non-zero exit, no traceback, no partial OUT."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import pytest

from growlm.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_clean(parent, name="out"):
    leftovers = [p.name for p in parent.iterdir() if name in p.name]
    assert leftovers == [], leftovers


def one_line(err: str, *needles: str) -> None:
    assert err.startswith("error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture
def llama(tiny_dir, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(tiny_dir("llama"), dst)
    return dst


CASES = [
    # (description, args after SRC OUT, expected fragments)
    ("unknown operator", ["--op", "stretch"], ["unknown operator 'stretch'", "stack"]),
    ("learned operator without steps", ["--op", "learn-depth", "--factor", "2"], ["needs --steps"]),
    ("factor below 2", ["--op", "stack", "--factor", "1"], ["--factor must be an integer >= 2"]),
    ("factor missing", ["--op", "stack"], ["needs --factor"]),
    ("layer out of range", ["--op", "layers", "--layers", "0,1,7"], ["layer index 7 out of range"]),
    ("layers not integers", ["--op", "layers", "--layers", "0,a"], ["comma-separated integers"]),
    ("layers shrink", ["--op", "layers", "--layers", "0,1"], ["growth needs at least 3"]),
    ("solar drop too big", ["--op", "solar", "--drop", "2"], ["--drop < 2"]),
    ("solar without drop", ["--op", "solar"], ["needs --drop"]),
    ("width smaller", ["--op", "zero-width", "--hidden-size", "16"], ["smaller than the source"]),
    (
        "heads not dividing kv",
        ["--op", "direct-width", "--num-heads", "6", "--num-kv-heads", "4"],
        ["not divisible by --num-kv-heads"],
    ),
    ("width unchanged", ["--op", "random-width"], ["needs a larger"]),
    (
        "param of another op",
        ["--op", "stack", "--factor", "2", "--drop", "1"],
        ["--drop does not apply to direct-depth"],
    ),
    ("two depth ops", ["--op", "stack+solar", "--factor", "2"], ["two depth operators"]),
    (
        "zero-depth target too small",
        ["--op", "zero-depth", "--num-layers", "3"],
        ["--num-layers must be an integer > 3"],
    ),
]


@pytest.mark.parametrize(("what", "args", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_operator_parameters(capsys, llama, tmp_path, what, args, needles):
    code, err = run(capsys, "grow", str(llama), str(tmp_path / "out"), *args)
    assert code == 2
    one_line(err, *needles)
    assert_clean(tmp_path)


def test_gqa_zero_width_cannot_shrink_groups(capsys, llama, tmp_path):
    code, err = run(
        capsys,
        "grow",
        str(llama),
        str(tmp_path / "out"),
        "--op",
        "zero-width",
        "--num-heads",
        "4",
        "--num-kv-heads",
        "4",
    )
    assert code == 2
    one_line(err, "query heads per kv head may not shrink")


def test_width_not_divisible_by_heads(capsys, tiny_dir, tmp_path):
    code, err = run(
        capsys,
        "grow",
        str(tiny_dir("gpt2")),
        str(tmp_path / "out"),
        "--op",
        "direct-width",
        "--hidden-size",
        "36",
    )
    assert code == 2
    one_line(err, "not divisible by head_dim 8")


def test_missing_and_empty_source(capsys, tmp_path):
    code, err = run(
        capsys,
        "grow",
        str(tmp_path / "nope"),
        str(tmp_path / "out"),
        "--op",
        "stack",
        "--factor",
        "2",
    )
    assert code == 2
    one_line(err, "does not exist")
    (tmp_path / "empty").mkdir()
    code, err = run(
        capsys,
        "grow",
        str(tmp_path / "empty"),
        str(tmp_path / "out"),
        "--op",
        "stack",
        "--factor",
        "2",
    )
    assert code == 2
    one_line(err, "has no config.json")
    assert_clean(tmp_path)


def test_not_a_causal_lm(capsys, llama, tmp_path):
    cfg = json.loads((llama / "config.json").read_text())
    cfg["architectures"] = ["BertModel"]
    (llama / "config.json").write_text(json.dumps(cfg))
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "not a causal language model")


def test_unsupported_architecture_lists_supported(capsys, llama, tmp_path):
    cfg = json.loads((llama / "config.json").read_text())
    cfg["model_type"] = "mamba"
    cfg["architectures"] = ["MambaForCausalLM"]
    (llama / "config.json").write_text(json.dumps(cfg))
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "unsupported architecture 'mamba'", "llama", "gpt_neox", "olmo2", "phi3")


def test_no_weights(capsys, llama, tmp_path):
    (llama / "model.safetensors").unlink()
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "has no weights")


def test_truncated_safetensors(capsys, llama, tmp_path):
    f = llama / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "truncated")
    assert_clean(tmp_path)


def test_corrupt_header(capsys, llama, tmp_path):
    f = llama / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"#" * 12
    f.write_bytes(bytes(data))
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "corrupt safetensors header")


def test_config_and_weights_disagree(capsys, llama, tmp_path):
    cfg = json.loads((llama / "config.json").read_text())
    cfg["num_hidden_layers"] = 4
    (llama / "config.json").write_text(json.dumps(cfg))
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "weights and config.json disagree")
    cfg["num_hidden_layers"] = 2
    (llama / "config.json").write_text(json.dumps(cfg))
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "not described by the llama spec")


def test_unsafe_bin_is_refused(capsys, llama, tmp_path):
    """A pickle that would run code must not load (weights_only)."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (llama / "model.safetensors").unlink()
    with open(llama / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "cannot load", "safely")
    assert "pwned" not in capsys.readouterr().out


def test_output_exists_and_force(capsys, llama, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, err = run(capsys, "grow", str(llama), str(out), "--op", "stack", "--factor", "2")
    assert code == 2
    one_line(err, "already exists", "--force")
    assert (out / "keep.txt").exists()
    # --force never replaces a folder growlm did not write
    code, err = run(
        capsys, "grow", str(llama), str(out), "--op", "stack", "--factor", "2", "--force"
    )
    assert code == 2
    one_line(err, "holds files growlm did not write")
    assert (out / "keep.txt").read_text() == "x"
    # an empty folder, and growlm's own output, are replaced
    (out / "keep.txt").unlink()
    code, _ = run(capsys, "grow", str(llama), str(out), "--op", "stack", "--factor", "2", "--force")
    assert code == 0 and (out / "model.safetensors").exists()
    code, _ = run(capsys, "grow", str(llama), str(out), "--op", "stack", "--factor", "3", "--force")
    assert code == 0
    assert json.loads((out / "growth.json").read_text())["out_layers"] == 9
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_disk_full_while_writing_leaves_nothing(capsys, llama, tmp_path, monkeypatch):
    import growlm.io.safetensors_stream as st

    real = st._header_bytes
    calls = {"n": 0}

    def failing(items):
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "_header_bytes", failing)
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    monkeypatch.setattr(st, "_header_bytes", real)
    assert calls["n"] == 1 and code == 2
    one_line(err, "disk full")
    assert_clean(tmp_path)


def test_not_enough_disk_refused_up_front(capsys, llama, tmp_path, monkeypatch):
    import shutil as sh

    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage._replace(free=10))
    code, err = run(
        capsys, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "2"
    )
    assert code == 2
    one_line(err, "not enough disk")


def test_gguf_conversion_refused_up_front_without_room(capsys, tmp_path, monkeypatch):
    """The float32 folder a GGUF file becomes is at least as large as the file."""
    import shutil as sh

    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(992))  # 1000 bytes
    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage._replace(free=999))
    code, err = run(capsys, "grow", str(gguf), str(tmp_path / "out"), "--op", "stack")
    assert code == 2
    one_line(err, "not enough disk for the float32 conversion of m.gguf", "gguf': needs about")
    one_line(err, "about 1000 B, 999 B free; free space in the growlm cache, or point GROWLM_CACHE")
    assert not (tmp_path / "cache" / "gguf").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--factor", "2.5"], "--factor: expected an integer, got '2.5'"),
        (["--dtype", "int8"], "invalid choice: 'int8'"),
        ([], "the following arguments are required: --op"),
    ],
)
def test_bad_cli_arguments_one_line(llama, tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        main(["grow", str(llama), str(tmp_path / "out"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: growlm grow: ") and "\n" not in err and needle in err, err


def test_console_script_exit_code_and_single_line(llama, tmp_path):
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "growlm")
    r = subprocess.run(
        [exe, "grow", str(llama), str(tmp_path / "out"), "--op", "stack", "--factor", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --factor must be an integer >= 2, got 0"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "m", "--limit", "0"], "argument --limit: must be at least 1, got '0'"),
        (["eval", "m", "--batch-size", "-2"], "--batch-size: must be at least 1, got '-2'"),
        (["eval", "m", "--num-fewshot", "-1"], "argument --num-fewshot: must be at least 0"),
        (["fit", "--bootstrap", "-1"], "argument --bootstrap: must be at least 0, got '-1'"),
        (
            ["data", "prepare", "--out", "o", "--tokenizer-train-bytes", "0"],
            "argument --tokenizer-train-bytes: must be at least 1, got '0'",
        ),
        (["eval", "m", "--limit", "1.5"], "argument --limit: expected an integer, got '1.5'"),
    ],
)
def test_counts_below_their_minimum_are_refused_by_the_parser(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    one_line(capsys.readouterr().err.strip(), needle)
