"""Architecture specs and their lookup by config ``model_type``."""

from __future__ import annotations

from growlm.arch.families import BUFFERS, FAMILIES
from growlm.arch.spec import ArchSpec, Axis, ConfigKeys, TensorSpec
from growlm.errors import UnsupportedArchitecture

_BY_TYPE = {mt: spec for spec in FAMILIES for mt in spec.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def spec_for(model_type: str | None) -> ArchSpec:
    """The spec for a config's ``model_type``; a clear error listing the supported ones."""
    if model_type in _BY_TYPE:
        return _BY_TYPE[model_type]
    raise UnsupportedArchitecture(
        f"unsupported architecture {model_type!r}: growlm supports "
        f"{', '.join(supported_model_types())} (open an issue to add a family spec)"
    )


__all__ = [
    "BUFFERS",
    "FAMILIES",
    "ArchSpec",
    "Axis",
    "ConfigKeys",
    "TensorSpec",
    "spec_for",
    "supported_model_types",
]
