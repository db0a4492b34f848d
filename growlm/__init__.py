"""growlm: grow small language models into large ones and keep pre-training them."""

from __future__ import annotations

__version__ = "0.1.0"

import growlm.models  # noqa: F401  (registers TokenFormer with transformers' Auto classes)
from growlm.grow import grow

__all__ = ["__version__", "grow"]
