"""argparse types for counts: a bad value is refused by the parser as one line, before any work."""

from __future__ import annotations

import argparse


def integer(text: str) -> int:
    """Any integer (the grow flags, whose bounds each operator checks with its own message)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (a batch size, a number of examples, a byte budget)."""
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (few-shot examples, bootstrap resamples: 0 means none)."""
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text!r}")
    return value
