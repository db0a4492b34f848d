"""The CLI starts without torch/transformers (``--help`` answers at once); dtype spellings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
HEAVY = ("torch", "transformers", "tokenizers", "numpy", "datasets")
HELP = [["--help"], ["grow", "--help"], ["data", "prepare", "--help"], ["eval", "--help"]]
PROBE = """
import json, sys
import growlm.cli
for argv in {argv}:
    try:
        growlm.cli.main(argv)
    except SystemExit:
        pass
print(json.dumps([m for m in {heavy} if m in sys.modules]))
"""


def test_help_imports_no_heavy_library():
    """Every --help in one fresh interpreter: none of them loads torch, transformers, ..."""
    code = PROBE.format(argv=HELP, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "usage: growlm grow" in out and "usage: growlm eval" in out
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_import_growlm_data_does_not_import_torch():
    code = "import sys, growlm, growlm.data; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    ("spelling", "stored"), [("bf16", "BF16"), ("bfloat16", "BF16"), ("fp16", "F16")]
)
def test_grow_dtype_accepts_both_spellings(spelling, stored, tiny_dir, tmp_path):
    from growlm.grow import GrowOptions, grow

    out = tmp_path / spelling
    grow(tiny_dir("llama"), out, "stack", {"factor": 2}, GrowOptions(dtype=spelling))
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {stored}


def test_growlm_grow_stays_the_function_after_its_module_is_imported():
    import growlm
    from growlm.grow import parse_shard_size  # imports the submodule growlm.grow

    assert parse_shard_size("1KB") == 1024
    assert callable(growlm.grow) and growlm.grow.__module__ == "growlm.grow"
    from growlm import grow

    assert grow is growlm.grow
