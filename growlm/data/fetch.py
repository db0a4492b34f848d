"""Package downloads for the corpus, each through its registry's own client (apt-get, npm): one
subprocess per download, and one clear line when the client is missing or the registry cannot be
reached. Nothing here installs anything; archives are unpacked into a folder the caller owns."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from growlm.errors import InvalidData


def run_client(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    """Run a registry client; a missing client or a failed download is one InvalidData line."""
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise InvalidData(
            f"could not download {what}: `{cmd[0]}` is not installed; install it or leave "
            "this source out"
        ) from None
    if result.returncode != 0:
        lines = [ln.strip() for ln in (result.stderr or result.stdout or "").splitlines()]
        last = next((ln for ln in reversed(lines) if ln), f"exit status {result.returncode}")
        raise InvalidData(
            f"could not download {what} with {cmd[0]} (is its registry reachable?): {last}"
        )
    return result


def apt_download(package: str, into: Path) -> Path:
    """``apt-get download PACKAGE`` (the candidate version) -> the .deb file."""
    run_client(["apt-get", "download", package], into, f"Debian package {package}")
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        raise InvalidData(f"could not download Debian package {package}: apt-get wrote no .deb")
    return debs[-1]


def deb_version(deb: Path) -> str:
    """The version in a .deb's name (``name_version_arch.deb``; ``%3a`` stands for ``:``)."""
    return deb.name.split("_")[1].replace("%3a", ":")


def deb_extract(deb: Path, into: Path) -> Path:
    """Unpack a .deb's files (``dpkg-deb -x``; no maintainer scripts run) under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    run_client(["dpkg-deb", "-x", str(deb), str(into)], into, f"the files of {deb.name}")
    return into


def npm_pack(spec: str, into: Path) -> Path:
    """``npm pack NAME@VERSION`` (downloads the registry's tarball, runs no scripts) -> .tgz."""
    run_client(["npm", "pack", spec, "--silent"], into, f"npm package {spec}")
    tgz = sorted(into.glob("*.tgz"))
    if not tgz:
        raise InvalidData(f"could not download npm package {spec}: npm wrote no .tgz")
    return tgz[-1]


def untar(archive: Path, into: Path) -> Path:
    """Extract the regular files of a tarball under ``into`` (links and absolute or ``..``
    paths are refused by the ``data`` filter)."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        tar.extractall(into, members=members, filter="data")
    return into
