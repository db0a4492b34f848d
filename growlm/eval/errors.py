"""Typed user errors of ``growlm eval``."""

from __future__ import annotations

from growlm.errors import GrowlmError


class EvalError(GrowlmError):
    """A model folder, data source or task set that evaluation cannot use."""
