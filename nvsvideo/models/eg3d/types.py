"""The in-memory form of an EG3D generator checkpoint, shared by every file reader.

It lives apart from the readers so that each of them (`checkpoint`, `pickle_loader`) imports it
and none imports another to get it: the imports run one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class EG3DCheckpoint:
    """A generator's config and weights, independent of the file they came from.

    `state_dict` uses the official tensor names and order (`backbone.mapping.fc0.weight`, ...);
    `rendering_kwargs` is the live value (authoritative over `init_kwargs['rendering_kwargs']`).
    """

    init_kwargs: dict[str, Any]
    rendering_kwargs: dict[str, Any]
    neural_rendering_resolution: int
    state_dict: dict[str, torch.Tensor]
    source: str

    def config(self) -> dict[str, Any]:
        """The JSON-able part: everything except the tensors and the source path."""
        return {
            "init_kwargs": self.init_kwargs,
            "rendering_kwargs": self.rendering_kwargs,
            "neural_rendering_resolution": self.neural_rendering_resolution,
        }
