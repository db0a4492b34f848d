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
