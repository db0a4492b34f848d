"""Output folders that never cost the user data: checked, locked, staged, swapped.

Every command that writes a folder (grow, data prepare, the demo) goes through
:func:`staged_output`:

1. :func:`check_output` refuses an OUT that is a source or contains one, a file, or (with
   ``--force``) a folder that growlm did not write: ``--force`` replaces only an empty folder or
   one whose record file (``growth.json``, ``manifest.json``, ...) says growlm wrote it.
2. A lock beside OUT (``flock`` on a hidden file that holds the writer's pid) makes a second
   writer into the same OUT refuse with one line; a killed writer's lock dies with it.
3. The new content is written to a hidden sibling (short name, whatever OUT's length) and
   swapped in by :func:`growlm.io.atomic.replace_dir`: OUT is the old folder or the new one.
   Siblings left by killed writers are removed by the next writer.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from growlm.errors import OutputBusy, OutputExists, OutputNotWritable
from growlm.io.atomic import clear_dead_siblings, replace_dir, short_name, sibling


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def owned_by_growlm(folder: Path, records: Sequence[str]) -> bool:
    """True when ``folder`` holds one of ``records`` naming growlm as its writer."""
    for name in records:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (
            any("growlm" in str(k) for k in data) or str(data.get("format")).startswith("growlm")
        ):
            return True  # growth.json (growlm_version), a data manifest (format growlm-tokens/N)
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return {"op", "src_layers"} <= set(data[0])  # the operator demo: grow reports
    return False


def check_output(
    out: str | Path,
    *,
    force: bool,
    records: Sequence[str],
    sources: Sequence[str | Path] = (),
    flag: str = "OUT",
) -> Path:
    """Refuse an output that cannot be written without losing data; returns OUT as a Path."""
    out = Path(out).expanduser()
    real = _resolved(out)
    for src in sources:
        src_real = _resolved(Path(src))
        if _inside(src_real, real):
            what = "is" if src_real == real else "contains"
            raise OutputNotWritable(
                f"{flag} {str(out)!r} {what} the source {str(src)!r}: writing there would destroy "
                f"it; choose an {flag} outside the source"
            )
    for parent in (out, *out.parents):
        if parent.exists() or parent.is_symlink():
            if parent != out and not parent.is_dir():
                raise OutputNotWritable(
                    f"cannot create {flag} {str(out)!r}: {str(parent)!r} is a file, not a folder"
                )
            break
    if not (out.exists() or out.is_symlink()):
        return out
    if not out.is_dir():
        raise OutputNotWritable(
            f"{flag} {str(out)!r} is a file, not a folder: choose another {flag}"
        )
    if not force:
        raise OutputExists(
            f"{flag} {str(out)!r} already exists: choose another path or pass --force to replace it"
        )
    if any(out.iterdir()) and not owned_by_growlm(out, records):
        raise OutputExists(
            f"{flag} {str(out)!r} holds files growlm did not write; --force replaces only empty "
            f"folders and growlm's own outputs: choose another {flag} or empty it yourself"
        )
    return out


@contextmanager
def output_lock(out: Path, flag: str = "OUT") -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (a file beside it); refuse at once if it is held."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{short_name(out.name)}.growlm-lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputBusy(
                    f"{flag} {str(out)!r} is being written by another growlm process "
                    f"(pid {holder}): wait for it to finish or choose another {flag}"
                ) from None
            raise
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # the lock file we hold is still the one at that path
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by its previous holder meanwhile: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        try:
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextmanager
def staged_output(
    out: str | Path,
    *,
    force: bool,
    records: Sequence[str],
    sources: Sequence[str | Path] = (),
    flag: str = "OUT",
) -> Iterator[Path]:
    """Lock OUT, yield an empty hidden staging folder, and swap it in when the block succeeds.

    On any failure (an exception, Ctrl-C, SIGTERM) the staging folder is removed and OUT is left
    as it was. The checks of :func:`check_output` are repeated under the lock.
    """
    out = Path(out).expanduser()
    check_output(out, force=force, records=records, sources=sources, flag=flag)
    with output_lock(out, flag):
        check_output(out, force=force, records=records, sources=sources, flag=flag)
        clear_dead_siblings(out, "tmp")
        tmp = sibling(out, "tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            yield tmp
            replace_dir(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
