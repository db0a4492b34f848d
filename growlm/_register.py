"""Make growlm's own model families (TokenFormer) known to transformers' Auto classes as soon as
transformers is in use, without making ``import growlm`` pay for torch and transformers.

``import growlm`` calls :func:`install`. Configs are registered right after transformers'
auto-config module is first imported, models right after its auto-model module (the user's
``from transformers import AutoModelForCausalLM``, or any growlm command that loads a model);
what is loaded already is registered at once. A meta-path hook wraps those two modules'
loaders; no remote code is involved.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from typing import Any


def _configs() -> None:
    from growlm.models import register_configs

    register_configs()


def _models() -> None:
    from growlm.models import register_models

    register_models()


_AFTER: dict[str, Callable[[], None]] = {
    "transformers.models.auto.configuration_auto": _configs,
    "transformers.models.auto.modeling_auto": _models,
}


class _After(importlib.abc.MetaPathFinder):
    """Wraps the loaders of transformers' auto modules to register our families after them."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        then = _AFTER.get(fullname)
        if then is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            then()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_HOOK = _After()


def install() -> None:
    for name, then in _AFTER.items():
        if name in sys.modules:
            then()
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
