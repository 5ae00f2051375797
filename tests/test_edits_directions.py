"""Linear directions: every shape found in the wild becomes one [14, 512] w+ direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nvsvideo.edits.directions import LinearDirection, direction_from_tensor, load_direction
from nvsvideo.errors import WeightsError


def per_layer_direction() -> torch.Tensor:
    """[14, 512] with a different value pattern on every layer, so reshapes that mix layers show."""
    return torch.arange(14 * 512, dtype=torch.float32).reshape(14, 512) / 1000.0 - 3.0


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (per_layer_direction()[0], per_layer_direction()[0].expand(14, 512)),                 # [512] InterFaceGAN
        (per_layer_direction()[0][None], per_layer_direction()[0].expand(14, 512)),           # [1, 512]
        (per_layer_direction(), per_layer_direction()),                                       # [14, 512]
        (per_layer_direction()[None], per_layer_direction()),                                 # [1, 14, 512] GOAE
        (per_layer_direction().reshape(7168), per_layer_direction()),                         # [7168]
        (per_layer_direction().reshape(1, 7168), per_layer_direction()),                      # [1, 7168] PREIM3D
    ],
    ids=["512", "1x512", "14x512", "1x14x512", "7168", "1x7168"],
)
@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_every_wild_shape_loads(tmp_path: Path, stored: torch.Tensor, expected: torch.Tensor, suffix: str) -> None:
    path = tmp_path / f"direction{suffix}"
    if suffix == ".npy":
        np.save(path, stored.numpy().astype(np.float64))  # a float64 file is read as float32
    else:
        torch.save(stored.clone(), path)
    direction = load_direction(path)
    assert direction.shape == (14, 512) and direction.dtype == torch.float32
    torch.testing.assert_close(direction, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(18, 512), (1, 18, 512), (1, 9216)])
def test_stylegan2_directions_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(WeightsError, match="18-layer direction for the 2D StyleGAN2"):
        direction_from_tensor(torch.zeros(shape), source="sg2")


@pytest.mark.parametrize("shape", [(256,), (2, 512), (14, 256), (1, 1, 512), (3, 14, 512)])
def test_unknown_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(WeightsError, match="a latent direction must be"):
        direction_from_tensor(torch.zeros(shape), source="odd")


def test_bad_values_are_refused() -> None:
    with pytest.raises(WeightsError, match="floating point"):
        direction_from_tensor(torch.zeros(512, dtype=torch.int64), source="ints")
    bad = torch.zeros(14, 512)
    bad[3, 7] = float("nan")
    with pytest.raises(WeightsError, match="non-finite"):
        direction_from_tensor(bad, source="nan")


def test_pickled_and_non_tensor_files_are_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "object.npy"
    np.save(pickled, np.array([{"direction": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(WeightsError, match="not a plain numeric"):
        load_direction(pickled)
    as_dict = tmp_path / "dict.pt"
    torch.save({"direction": torch.zeros(512)}, as_dict)
    with pytest.raises(WeightsError, match="must hold one tensor"):
        load_direction(as_dict)


def test_unit_delta_is_the_direction_on_every_frame() -> None:
    direction = per_layer_direction()
    module = LinearDirection(direction)
    ws = torch.randn(5, 14, 512, dtype=torch.float64)
    delta = module.unit_delta(ws)
    assert delta.shape == ws.shape and delta.dtype == ws.dtype
    for t in range(5):
        torch.testing.assert_close(delta[t], direction.double())
