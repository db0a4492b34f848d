"""growlm: grow small language models into large ones and keep pre-training them."""

from __future__ import annotations

import sys
import types
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


class _Package(types.ModuleType):
    """Keeps ``growlm.grow`` the function: importing the submodule ``growlm.grow`` would
    otherwise bind the package attribute to the module (it stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "grow" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def _install_model_families() -> None:
    from growlm._register import install

    install()  # TokenFormer: known to AutoModelForCausalLM once transformers is in use


_install_model_families()
