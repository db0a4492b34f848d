"""Model families growlm implements itself (registered with transformers' Auto classes when
growlm is imported, so their checkpoints load without remote code)."""

from __future__ import annotations

from growlm.models import tokenformer

tokenformer.register()
