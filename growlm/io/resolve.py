"""Where a model argument points: a local folder, a Hugging Face hub id or a GGUF file.

Every command that takes a model (grow's SRC, train's ``model.init``, eval, ``plan --model``)
turns its argument into a local checkpoint folder here, so all of them accept the same forms:

- a folder: used as it is;
- ``org/name[@revision]``: resolved through huggingface_hub's cache (downloading what is missing
  when the hub is reachable; offline, only from the cache);
- a ``.gguf`` file: de-quantised once by transformers into a float32 folder cached under
  ``$GROWLM_CACHE`` (default ``~/.cache/growlm``), keyed by the file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from growlm.data.cache import cache_root
from growlm.errors import CorruptCheckpoint, NotACausalLM, one_line
from growlm.io.atomic import atomic_dir
from growlm.io.diskspace import require_free

# org/name with an optional @revision (a branch, tag or commit); hub ids have exactly one "/"
_HUB_ID = re.compile(r"^([A-Za-z0-9][\w.\-]*/[\w.\-]+)(?:@([\w.\-/]+))?$")
# what growlm reads from a model repo: config, weights, tokenizer, generation config, the card
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja", "README.md"]
CONFIG_FILES = ["*.json", "tokenizer.model", "*.txt", "*.jinja", "README.md"]
GGUF_FORMAT = 1  # bump when the conversion changes: cached folders are rebuilt
GGUF_MARKER = "growlm-gguf.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A local checkpoint folder and where it came from (for growth.json and model cards)."""

    path: Path
    given: str
    hub_id: str | None = None
    revision: str | None = None
    gguf: str | None = None

    def record(self) -> dict[str, Any]:
        """Provenance for growth.json: empty for a plain folder."""
        out: dict[str, Any] = {}
        if self.hub_id:
            out["source_hub_id"] = self.hub_id
            if self.revision:
                out["source_revision"] = self.revision
        if self.gguf:
            out["source_gguf"] = self.gguf
        return out


def hub_id(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision) when ``text`` reads as ``org/name[@revision]``, else None."""
    m = _HUB_ID.match(text)
    return (m.group(1), m.group(2)) if m else None


def resolve_model(
    src: str | Path, what: str = "source", config_only: bool = False
) -> ResolvedModel:
    """The local folder behind ``src`` (a folder, hub id or .gguf file); ``what`` names the
    argument in errors. ``config_only`` fetches a hub model's config and tokenizer, no weights.
    A path that exists is always taken as a path; other problems are left to the reader of the
    folder (it names what is missing)."""
    given = str(src)
    path = Path(given).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ResolvedModel(gguf_folder(path), given, gguf=str(path.resolve()))
    if path.exists():
        return ResolvedModel(path, given)
    if path.suffix.lower() == ".gguf":
        raise NotACausalLM(f"{what} {given} does not exist: give a .gguf file, folder or hub id")
    parsed = hub_id(given)
    if parsed is None:
        return ResolvedModel(path, given)  # the folder reader says "does not exist"
    repo, revision = parsed
    folder = _snapshot(repo, revision, what, CONFIG_FILES if config_only else HUB_FILES)
    return ResolvedModel(folder, given, hub_id=repo, revision=revision)


def _hub_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _snapshot(repo: str, revision: str | None, what: str, patterns: list[str]) -> Path:
    """The cached snapshot folder of ``repo`` (downloaded unless offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache, offline = _hub_cache(), _offline()
    name = repo + (f"@{revision}" if revision else "")
    kwargs: dict[str, Any] = dict(
        revision=revision, cache_dir=cache, local_files_only=offline, allow_patterns=patterns
    )
    try:
        folder = Path(snapshot_download(repo, **kwargs))
        if patterns is HUB_FILES and not offline and not any(folder.glob("*.safetensors")):
            kwargs["allow_patterns"] = ["pytorch_model*.bin"]  # older repos: read weights_only
            folder = Path(snapshot_download(repo, **kwargs))
    except GatedRepoError:
        raise NotACausalLM(
            f"{what} {name}: the hub model is gated; accept its licence on the hub and log in "
            "(`hf auth login`), or give a local folder"
        ) from None
    except RevisionNotFoundError:
        raise NotACausalLM(f"{what} {name}: the hub model has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise NotACausalLM(
            f"{what} {name} is neither a local folder nor a hub model (or it is private: log in)"
        ) from None
    except LocalEntryNotFoundError:
        state = "HF_HUB_OFFLINE=1" if offline else "the hub could not be reached"
        raise NotACausalLM(
            f"{what} {name} is not a local folder and not in the hub cache {cache} ({state}): "
            f"download it once with network access (unset HF_HUB_OFFLINE), point HF_HUB_CACHE "
            "at a cache that holds it, or give a local folder"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise NotACausalLM(f"{what} {name}: cannot fetch from the hub: {one_line(exc)}") from None
    return folder


# -- GGUF ------------------------------------------------------------------------------------
def gguf_types() -> list[str]:
    """The GGUF tensor types transformers can de-quantise (through the gguf package)."""
    try:
        from gguf import quants

        return ["F32", "F16", *sorted(t.name for t in quants._type_traits)]
    except (ImportError, AttributeError):
        return ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K..Q6_K"]


def _file_types(path: Path) -> list[str]:
    """The tensor types a GGUF file holds (from its header), or [] when unreadable."""
    try:
        from gguf import GGUFReader

        return sorted({t.tensor_type.name for t in GGUFReader(str(path)).tensors})
    except Exception:  # a broken header is reported by the conversion itself
        return []


def _gguf_key(path: Path) -> str:
    st = path.stat()
    ident = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{GGUF_FORMAT}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def gguf_folder(path: Path, root: Path | None = None, quiet: bool = False) -> Path:
    """A float32 Hugging Face folder de-quantised from the GGUF file ``path`` (built once)."""
    path = Path(path)
    final = (root or cache_root()) / "gguf" / f"{path.stem}-{_gguf_key(path)}"
    if not ((final / GGUF_MARKER).is_file() and (final / "config.json").is_file()):
        _build(path, final)
    if not quiet:
        types = json.loads((final / GGUF_MARKER).read_text()).get("types") or ["unknown types"]
        print(
            f"note: {path.name} ({', '.join(types)}) de-quantised to float32 in {final}; "
            f"quantised weights are lossy: the result carries the file's quantisation error "
            f"(transformers reads GGUF types {', '.join(gguf_types())})",
            file=sys.stderr,
            flush=True,
        )
    return final


def _build(path: Path, final: Path) -> None:
    types = _file_types(path)
    # float32 holds at least as many bytes as any GGUF encoding of the same tensors
    require_free(
        final.parent,
        path.stat().st_size,
        f"the float32 conversion of {path.name}",
        "free space in the growlm cache, or point GROWLM_CACHE at another disk",
    )
    with atomic_dir(final) as tmp:
        _convert(path, tmp, types)


def _convert(gguf: Path, out: Path, types: list[str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        where = str(gguf.parent)
        tok = AutoTokenizer.from_pretrained(where, gguf_file=gguf.name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            where, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
    except ImportError as exc:
        raise NotACausalLM(
            f"reading {gguf.name} needs the gguf package: pip install 'growlm[gguf]' "
            f"({one_line(exc)})"
        ) from None
    except (
        ValueError,
        NotImplementedError,
        KeyError,
        OSError,
        RuntimeError,
        struct.error,  # a truncated or malformed header
        EOFError,
        IndexError,
        OverflowError,
        MemoryError,  # a header that claims absurd sizes
    ) as exc:
        raise CorruptCheckpoint(
            f"transformers cannot read {gguf} ({one_line(exc, 160)}); it reads GGUF files of "
            f"tensor types {', '.join(gguf_types())}"
        ) from None
    # de-quantised to float32 on load: without the GGUF quantizer the folder saves and
    # reloads as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    size = gguf.stat().st_size
    marker = {"format": GGUF_FORMAT, "gguf": str(gguf.resolve()), "size": size, "types": types}
    (out / GGUF_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
