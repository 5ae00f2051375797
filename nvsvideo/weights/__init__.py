"""Weight files: the registry of known files, where they are looked for, checking and fetching them."""

from nvsvideo.weights.registry import (
    KNOWN_WEIGHTS,
    WeightFile,
    expected_path,
    get_weight,
    how_to_get,
    locate,
    require_weight,
    resolve_weights_dir,
    torch_hub_checkpoints_dir,
)

__all__ = [
    "KNOWN_WEIGHTS",
    "WeightFile",
    "expected_path",
    "get_weight",
    "how_to_get",
    "locate",
    "require_weight",
    "resolve_weights_dir",
    "torch_hub_checkpoints_dir",
]
