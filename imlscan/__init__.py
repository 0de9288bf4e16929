"""imlscan: show where a photo was manipulated (SparseViT image-manipulation localization).

The public Python API is imported lazily so that ``imlscan --version`` and ``import imlscan``
stay fast and never touch torch or the network.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from imlscan._version import __version__

_LAZY = {
    "create_model": "imlscan.models.registry",
    "list_models": "imlscan.models.registry",
    "convert_official_checkpoint": "imlscan.models.convert",
    "SparseViT": "imlscan.models.sparsevit",
    "SparseViTConfig": "imlscan.models.sparsevit",
    "load_model": "imlscan.weights.store",
    "save_weights": "imlscan.weights.store",
    "scan": "imlscan.scanning.predict",
    "ScanResult": "imlscan.scanning.result",
    "Predictor": "imlscan.scanning.predict",
    "ImlscanError": "imlscan.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imlscan' has no attribute {name!r}")
