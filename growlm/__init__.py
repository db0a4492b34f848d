"""growlm: grow small language models into large ones and keep pre-training them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from growlm.grow import grow

__all__ = ["__version__", "grow"]


def __getattr__(name: str) -> Any:
    """``growlm.grow`` on first use: importing growlm (the CLI, the data tools) must not pay
    for torch and transformers."""
    if name == "grow":
        from growlm.grow import grow

        return grow
    raise AttributeError(f"module 'growlm' has no attribute {name!r}")
