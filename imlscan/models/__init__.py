"""SparseViT networks and their named variants."""

from imlscan.models.convert import check_state_dict, convert_official_checkpoint
from imlscan.models.registry import create_model, get_config, get_variant, list_models
from imlscan.models.sparsevit import SparseViT, SparseViTConfig, count_macs, count_parameters

__all__ = [
    "SparseViT",
    "SparseViTConfig",
    "check_state_dict",
    "convert_official_checkpoint",
    "count_macs",
    "count_parameters",
    "create_model",
    "get_config",
    "get_variant",
    "list_models",
]
