"""Named GGUF models and where their bytes come from; see `registry` for the built-ins.

`assemble` is deliberately not re-exported: the name would shadow the submodule of that name.
"""

from workhorse.models.hub import HubFile
from workhorse.models.registry import (
    BUILTIN_MODELS,
    DEFAULT_ENCODER_MODEL,
    DEFAULT_FEATURES_MODEL,
    DEFAULT_GENERATION_MODEL,
    ModelSpec,
    ModelStatus,
    PackageChunks,
    PackageConversion,
    ResolvedModel,
    default_served_models,
    encoder_installed,
    offline_models,
    pip_command,
    pull,
    resolve,
    status,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_ENCODER_MODEL",
    "DEFAULT_FEATURES_MODEL",
    "DEFAULT_GENERATION_MODEL",
    "HubFile",
    "ModelSpec",
    "ModelStatus",
    "PackageChunks",
    "PackageConversion",
    "ResolvedModel",
    "default_served_models",
    "encoder_installed",
    "offline_models",
    "pip_command",
    "pull",
    "resolve",
    "status",
]
