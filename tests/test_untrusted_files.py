"""Untrusted files: growlm's source never unpickles (torch.load only with weights_only=True, no
pickle module), runs code shipped in a model folder only behind --trust-remote-code (off by
default), and never turns a name from a recipe or an argument into a path outside OUT."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

import growlm
from growlm.analysis.errors import AnalysisError
from growlm.analysis.sweep import parse_target_size
from growlm.cli import build_parser
from growlm.errors import InvalidRecipe
from growlm.safety import is_safe_name
from growlm.train.recipe import recipe_from_dict

SOURCE = Path(growlm.__file__).parent
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def unsafe_calls(source: str, where: str = "<string>") -> list[str]:
    """Every way ``source`` could unpickle, run loaded code, or trust shipped model code."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names if a.name in UNPICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "") in UNPICKLERS:
            found.append(f"{line}: from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            # a bare load(...) would slip past the torch.load check below
            found += [f"{line}: from torch import load" for a in node.names if a.name == "load"]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name.endswith("torch.load"):
                safe = _keyword(node, "weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    found.append(f"{line}: {name}(...) without weights_only=True")
            if name.split(".")[-1] in ("load", "loads") and name.split(".")[0] in UNPICKLERS:
                found.append(f"{line}: {name}(...)")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"):
                found.append(f"{line}: {name}(...)")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                allow = _keyword(node, "allow_pickle")
                if isinstance(allow, ast.Constant) and allow.value is True:
                    found.append(f"{line}: {name}(..., allow_pickle=True)")
            if name.endswith("from_pretrained"):
                trust = _keyword(node, "trust_remote_code")
                if trust is None:
                    found.append(f"{line}: {name}(...) without an explicit trust_remote_code")
                elif isinstance(trust, ast.Constant) and trust.value is not False:
                    found.append(f"{line}: {name}(..., trust_remote_code={trust.value!r})")
    return found


def test_scanner_finds_each_unsafe_pattern():
    # the unsafe calls live only in this string, assembled so that no line of this file is one
    load = "torch." + "load"
    bad = f"""
import pickle
from dill import loads
from torch import load
import torch, yaml, numpy as np
{load}(f)
{load}(f, weights_only=False)
pickle.loads(b)
yaml.load(text)
np.load(f, allow_pickle=True)
AutoModelForCausalLM.from_pretrained(path)
AutoTokenizer.from_pretrained(path, trust_remote_code=True)
eval(text)
"""
    found = unsafe_calls(bad)
    assert len(found) == 11, found
    good = f"""
import torch, yaml
{load}(f, map_location="cpu", weights_only=True, mmap=True)
yaml.safe_load(text)
AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)
"""
    assert unsafe_calls(good) == []


def test_growlm_source_never_unpickles_or_trusts_shipped_code():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 40
    found = [f for file in files for f in unsafe_calls(file.read_text(), str(file))]
    assert found == []
    # the loaders of user folders are among the scanned calls (the scan is not vacuous)
    calls = sum(file.read_text().count("from_pretrained(") for file in files)
    assert calls >= 3


def test_trust_remote_code_is_off_by_default_and_passed_through(tmp_path, monkeypatch):
    import transformers

    from growlm.eval.errors import EvalError
    from growlm.eval.perplexity import load_model

    args = build_parser().parse_args(["eval", str(tmp_path), "--data", "x.txt"])
    assert args.trust_remote_code is False
    flagged = build_parser().parse_args(["eval", str(tmp_path), "--trust-remote-code"])
    assert flagged.trust_remote_code is True

    folder = tmp_path / "m"
    folder.mkdir()
    config = {"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "x.Model"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "vocab.json").write_text("{}")
    seen: list[object] = []

    class Stop(Exception):
        pass

    def record(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise Stop

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    with pytest.raises(EvalError, match="pass --trust-remote-code to run it"):
        load_model(folder)
    assert seen == []  # refused before transformers could import anything from the folder
    with pytest.raises(Stop):
        load_model(folder, trust_remote_code=True)
    assert seen == [True]
    config.pop("auto_map")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(Stop):
        load_model(folder)
    assert seen == [True, False]


BASE = {
    "data": {"sources": ["default"]},
    "stages": [{"name": "base", "tokens": 1000}, {"name": "big", "tokens": 1000}],
}


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "a\\b", "..", ".hidden", "", "/abs", "x y", "final", "checkpoints"]
)
def test_stage_names_that_are_not_plain_folder_names_are_refused(name):
    raw = json.loads(json.dumps(BASE))
    raw["stages"][1]["name"] = name
    with pytest.raises(InvalidRecipe) as err:
        recipe_from_dict(raw, [])
    message = str(err.value)
    assert message.startswith(f"stages.1.name: {name!r} is ") and "\n" not in message
    assert message.endswith(("is not a valid folder name", "is reserved"))


@pytest.mark.parametrize("name", ["grown", "grown-2", "s1.5b", "Stage_3"])
def test_plain_stage_names_are_accepted(name):
    raw = json.loads(json.dumps(BASE))
    raw["stages"][1]["name"] = name
    assert recipe_from_dict(raw, []).stages[1].name == name


@pytest.mark.parametrize("text", ["../../x:hidden_size=64", "a/b:hidden_size=64", ".x:n=1"])
def test_sweep_size_names_that_would_escape_out_are_refused(text):
    with pytest.raises(AnalysisError, match="becomes a folder name"):
        parse_target_size(text)
    assert parse_target_size("m:hidden_size=96") == ("m", {"hidden_size": 96})


def test_safe_names():
    assert all(is_safe_name(n) for n in ("base", "a.b", "x-1", "A_2"))
    assert not any(is_safe_name(n) for n in ("", "..", "a..b", "a/b", ".x", "-x", None, 3))


def test_grow_validates_the_tokenizer_before_copying_it(tiny_dir, tmp_path):
    from growlm.errors import CorruptCheckpoint
    from growlm.grow import grow

    src = tmp_path / "src"
    shutil.copytree(tiny_dir("llama"), src)
    (src / "tokenizer.json").write_text('{"truncated": ')
    with pytest.raises(CorruptCheckpoint, match=r"tokenizer\.json is not valid JSON"):
        grow(src, tmp_path / "out", "stack", {"factor": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
