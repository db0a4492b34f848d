"""Typed user errors. The CLI turns each into one line and a non-zero exit; asserts are for bugs."""

from __future__ import annotations


class GrowlmError(Exception):
    """A problem with the user's input: message names the problem and the fix."""

    exit_code = 2


class UnsupportedArchitecture(GrowlmError):
    """The checkpoint's model family has no architecture spec."""


class NotACausalLM(GrowlmError):
    """The directory does not hold a causal language model checkpoint."""


class CorruptCheckpoint(GrowlmError):
    """A weight file is truncated, unreadable or inconsistent with its index/config."""


class InvalidGrowth(GrowlmError):
    """Operator parameters that cannot produce a valid larger model."""


class UnknownOperator(GrowlmError):
    """The operator name is not in the registry."""


class OutputExists(GrowlmError):
    """The output path exists and --force was not given."""


class OutputBusy(GrowlmError):
    """Another growlm process is writing the same output right now."""


class DiskFull(GrowlmError):
    """Writing the output ran out of space (or obviously would: refused up front)."""


class OutputNotWritable(GrowlmError):
    """The output location cannot be written (permissions, read-only disk, a file in the way)."""


class ConversionError(GrowlmError):
    """A checkpoint of another codebase that cannot be converted as given (an option missing)."""


class InvalidRecipe(GrowlmError):
    """A training recipe that cannot run."""


class InvalidData(GrowlmError):
    """Corpus, tokenizer or token shards that cannot be used."""


class PeerFailed(GrowlmError):
    """Another process of a torchrun job failed during a step every process takes part in."""


class NumericalFault(GrowlmError):
    """Training produced a non-finite loss or gradient; the step was not applied."""


class OutOfMemory(GrowlmError):
    """An allocation failed: the message names the size asked for and the knob to turn."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup of an interrupted write runs."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A library exception's message as one line (its lines joined), for a typed error."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_DISK_FULL_TEXT = ("No space left", "os error 28", "StorageFull")  # safetensors' Rust errors


def is_disk_full(exc: BaseException) -> bool:
    """An OSError (or a safetensors error wrapping one) that says the disk or quota is full."""
    import errno

    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(s in str(exc) for s in _DISK_FULL_TEXT)


def os_error(
    exc: BaseException,
    what: str | None = None,
    kept: str | None = None,
    again: str = "run the same command again",
) -> DiskFull | OutputNotWritable:
    """The one-line user error for a failed file operation: the one mapping of OSError.

    ``what``: what was being written (default: the file the error names); ``kept``: what
    survived the failure; ``again``: how to retry once the cause is fixed."""
    import errno

    filename = getattr(exc, "filename", None)
    where = what or (str(filename) if filename else "")
    survived = f"; {kept}" if kept else ""
    if is_disk_full(exc):
        writing = f" while writing {where}" if where else ""
        return DiskFull(f"disk full{writing}{survived}: free space, then {again}")
    if getattr(exc, "errno", None) == errno.ENAMETOOLONG:
        return OutputNotWritable(f"path too long: {where}: choose a shorter name")
    reason = getattr(exc, "strerror", None) or one_line(exc)
    if what is None:
        place = f" {where}" if where else ""
        return OutputNotWritable(
            f"cannot access{place}: {reason}; fix the path or its permissions, or choose "
            "another path"
        )
    return OutputNotWritable(
        f"cannot write {what}: {reason}{survived}: fix the output location, then {again}"
    )
