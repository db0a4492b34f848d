"""Output folders that never cost the user data: checked, locked, staged, swapped.

A command states its output once, as an :class:`OutputSpec` (the folder, ``--force``, the files
that prove growlm wrote it, what it may hold, the sources it must not overwrite, the flag that
names it in errors). Every command that writes a folder whole (grow, data prepare, data
fetch-corpus) goes through :meth:`OutputSpec.staged`; the operator demo uses its check:

1. :meth:`OutputSpec.check` refuses an OUT that is a source or contains one, a file, or (with
   ``--force``) a folder that growlm did not write: ``--force`` replaces only an empty folder or
   one whose record file (``growth.json``, ``manifest.json``, ...) says growlm wrote it.
2. A lock beside OUT (``flock`` on a hidden file that holds the writer's pid) makes a second
   writer into the same OUT refuse with one line; a killed writer's lock dies with it.
3. The new content is written to a hidden sibling (short name, whatever OUT's length) and
   swapped in by :func:`growlm.io.atomic.atomic_dir`: OUT is the old folder or the new one.
   Siblings left by killed writers are removed by the next writer.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from growlm.errors import OutputBusy, OutputExists, OutputNotWritable
from growlm.io.atomic import atomic_dir, clear_dead_siblings, short_name


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


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    """A command's output folder and what may be replaced there, stated once.

    ``records``: the files that prove growlm wrote a folder; ``members``: name patterns of
    everything such a folder holds (with ``force`` anything else in it is the user's, and refused
    by name); ``sources``: inputs that OUT must not be, contain or be linked from; ``flag``: how
    errors name OUT."""

    path: Path
    records: Sequence[str]
    force: bool = False
    members: Sequence[str] = ("*",)
    sources: Sequence[str | Path] = ()
    flag: str = "OUT"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    def check(self) -> Path:
        """Refuse an output that cannot be written without losing data; returns OUT."""
        return _check(self)

    @contextmanager
    def staged(self) -> Iterator[Path]:
        """Lock OUT, yield an empty hidden staging folder, and swap it in when the block succeeds.

        On any failure (an exception, Ctrl-C, SIGTERM) the staging folder is removed and OUT is
        left as it was. The checks of :meth:`check` are repeated under the lock."""
        self.check()
        with output_lock(self.path, self.flag):
            self.check()
            clear_dead_siblings(self.path, "tmp")
            with atomic_dir(self.path) as tmp:
                yield tmp


def require_folder(out: Path, flag: str) -> None:
    """An output that exists must be a folder (a file there is never replaced)."""
    if out.exists() and not out.is_dir():
        raise OutputNotWritable(
            f"{flag} {str(out)!r} is a file, not a folder: choose another {flag}"
        )


def _check(spec: OutputSpec) -> Path:
    """A source, a file of a source (a symlink into OUT, as in the HF cache), the current folder
    and a symlinked OUT are never replaced."""
    out, force, flag = spec.path, spec.force, spec.flag
    real = _resolved(out)
    for src in spec.sources:
        src_path = Path(src)
        src_real = _resolved(src_path)
        if _inside(src_real, real):
            what = "is" if src_real == real else "contains"
            raise OutputNotWritable(
                f"{flag} {str(out)!r} {what} the source {str(src)!r}: writing there would destroy "
                f"it; choose an {flag} outside the source"
            )
        inner = src_path.iterdir() if src_path.is_dir() else iter(())
        for item in inner:
            if _inside(_resolved(item), real):
                raise OutputNotWritable(
                    f"the source file {str(item)!r} links into {flag} {str(out)!r}: writing there "
                    f"would destroy the source; choose another {flag}"
                )
    if _inside(_resolved(Path.cwd()), real) and (out.exists() or out.is_symlink()):
        raise OutputNotWritable(
            f"{flag} {str(out)!r} is the current folder or contains it: run from elsewhere or "
            f"choose another {flag}"
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
    require_folder(out, flag)
    if not force:
        raise OutputExists(
            f"{flag} {str(out)!r} already exists: choose another path or pass --force to replace it"
        )
    if out.is_symlink():
        raise OutputExists(
            f"{flag} {str(out)!r} is a symbolic link: --force replaces only real folders; give the "
            f"folder it points to ({str(real)!r}) or another {flag}"
        )
    entries = sorted(p.name for p in out.iterdir())
    if entries and not owned_by_growlm(out, spec.records):
        raise OutputExists(
            f"{flag} {str(out)!r} holds files growlm did not write; --force replaces only empty "
            f"folders and growlm's own outputs: choose another {flag} or empty it yourself"
        )
    foreign = [e for e in entries if not any(fnmatch.fnmatchcase(e, m) for m in spec.members)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise OutputExists(
            f"{flag} {str(out)!r} is growlm's output but also holds {shown}, which growlm did not "
            f"write: move them out first, or choose another {flag}"
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
