"""Write files and folders so that readers see the old content or the new one, never half of it.

A folder is written under a hidden temporary name and renamed into place (``atomic_dir``, which
every folder writer uses: grow, data prepare and fetch-corpus through growlm.io.output, training
checkpoints and exports, the GGUF conversion cache); an old folder is first renamed aside and
deleted after the swap, so a process killed at any moment leaves the old folder, no folder, or
the new one, plus hidden debris that the next write clears.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_NAME_KEEP = 48  # characters of a name kept in its hidden siblings' names


def short_name(name: str) -> str:
    """``name`` shortened for hidden sibling names: a long name must still leave room."""
    if len(name) <= _NAME_KEEP:
        return name
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{name[: _NAME_KEEP - 11]}~{digest}"


def sibling(final: Path, tag: str) -> Path:
    """A hidden sibling of ``final`` owned by this process: ``.<short name>.<tag>-<pid>``."""
    return final.parent / f".{short_name(final.name)}.{tag}-{os.getpid()}"


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path``."""
    target = Path(path)
    tmp = sibling(target, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(
    final: Path, staging: Path | None = None, *, durable: bool = False
) -> Iterator[Path]:
    """Yield an empty hidden folder and swap it in at ``final`` when the block succeeds.

    ``staging`` is where the new content is written (default: this process's hidden sibling of
    ``final``); an old one there is removed first. On any failure (an exception, Ctrl-C) it is
    removed and ``final`` is left as it was. ``durable``: flush the files and the folder to disk
    before the swap (training checkpoints, which a crash must not tear)."""
    tmp = staging if staging is not None else sibling(final, "tmp")
    if tmp.exists() or tmp.is_symlink():
        _delete(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if durable:
            fsync_files(tmp)
            fsync_dir(tmp)
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the finished folder ``tmp`` to ``final``, replacing any old ``final`` without a
    moment where a partly deleted folder sits at ``final``."""
    clear_debris(final)
    if final.exists() or final.is_symlink():
        trash = _trash_name(final)
        os.replace(final, trash)
        os.replace(tmp, final)
        _delete(trash)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def _delete(path: Path) -> None:
    """Remove a folder tree, or a symlink itself (never what it points to)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete a folder so that it vanishes at once (renamed aside first, then deleted)."""
    trash = _trash_name(path)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clear_debris(final: Path) -> None:
    """Delete what killed ``replace_dir``/``remove_dir`` calls left next to ``final``."""
    parent = final.parent
    if parent.is_dir():
        for stale in parent.glob(f".{short_name(final.name)}.old-*"):
            _delete(stale)


def clear_dead_siblings(final: Path, tag: str) -> None:
    """Remove ``.<name>.<tag>-<pid>`` siblings whose writer process is gone (killed)."""
    parent = final.parent
    if not parent.is_dir():
        return
    for stale in parent.glob(f".{short_name(final.name)}.{tag}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _trash_name(path: Path) -> Path:
    return sibling(path, "old")


def fsync_files(folder: Path) -> None:
    """Flush every file of ``folder`` (not recursive) to disk."""
    for item in folder.iterdir():
        if item.is_file():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
