"""Typed user errors of the analysis commands; the CLI prints each as one line and exits 2."""

from __future__ import annotations

from growlm.errors import GrowlmError


class AnalysisError(GrowlmError):
    """Input an analysis command cannot use (named in the message, with the fix)."""


class RunNotFound(AnalysisError):
    """A run folder, or its metrics.jsonl, does not exist."""


class NoValidationLoss(AnalysisError):
    """A run logged no ``val_loss``: equal-loss comparisons need validation evaluations."""


class InvalidGuideline(AnalysisError):
    """A guideline JSON file that is missing coefficients or cannot be read."""


class FitFailed(AnalysisError):
    """Too few or degenerate points for a fit."""
