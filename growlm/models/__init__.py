"""Model families growlm implements itself, registered with transformers' Auto classes when
growlm is imported (growlm/_register.py), so their checkpoints load without remote code."""

from __future__ import annotations


def register_configs() -> None:
    from growlm.models import tokenformer_config

    tokenformer_config.register()


def register_models() -> None:
    from growlm.models import tokenformer

    tokenformer.register()
