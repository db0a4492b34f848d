"""Make growlm's own model families (TokenFormer) known to transformers' Auto classes as soon as
both are in use, without making ``import growlm`` pay for torch and transformers.

``import growlm`` calls :func:`install`: if transformers' auto-config module is loaded already the
families are registered at once; otherwise a meta-path hook registers them right after that
module is first imported (by the user's ``from transformers import AutoModelForCausalLM`` or by
any growlm command that loads a model). No remote code is involved.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

_TARGET = "transformers.models.auto.configuration_auto"


def _register() -> None:
    from growlm.models import register_all

    register_all()


class _AfterAutoModels(importlib.abc.MetaPathFinder):
    """Wraps the loader of transformers' auto-config module to register our families after it."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            _uninstall()
            _register()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_HOOK = _AfterAutoModels()


def _uninstall() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def install() -> None:
    if _TARGET in sys.modules:
        _register()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
