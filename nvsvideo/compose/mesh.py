"""Mesh export of one frame (`rerender --mesh`): marching cubes on the generator's density.

Follows the official EG3D shape extraction (`eg3d_facts.md` §3.8 and the official `gen_samples.py`):
- the raw density (before the renderer's softplus(σ − 1)) is sampled on a regular grid spanning
  the tri-plane box [−box_warp/2, box_warp/2]³, end points included (official shape_res 512; our
  default is 256, 8x cheaper and plenty for a preview);
- int(30·res/256) voxels at every face of the cube are set to −1000, which cuts off the slab-like
  artefacts the tri-planes produce at the box border;
- the surface is the level set σ = 10.

Differences on purpose: vertices are written in world units of the EG3D frame (+y up, the face
looks towards +z) instead of voxel indices with the official axis flip and transpose, so the mesh
lines up with the cameras, and faces are wound so that their normals point out of the head.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nvsvideo.errors import UsageError
from nvsvideo.files import atomic_output
from nvsvideo.validate import mesh_format

#: Surface level on the raw density, as in the official extraction.
OFFICIAL_LEVEL = 10.0
#: Value the border slab is overwritten with (official), far below any surface level.
BORDER_VALUE = -1000.0

DensityFn = Callable[[torch.Tensor], torch.Tensor]
"""points [P, 3] world coordinates -> raw density [P] (or [P, 1])."""


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh."""

    vertices: np.ndarray
    """float32 [V, 3] world coordinates."""
    faces: np.ndarray
    """int32 [F, 3] vertex indices, counter-clockwise seen from outside."""


def grid_axis(resolution: int, box_size: float) -> np.ndarray:
    """Sample positions along one axis: `resolution` points spanning [-box/2, box/2], ends included.

    Returns:
        float64 [resolution].
    """
    return np.linspace(-box_size / 2.0, box_size / 2.0, resolution)


@torch.no_grad()
def sample_density_grid(
    density_fn: DensityFn,
    resolution: int = 256,
    box_size: float = 1.0,
    chunk: int = 1 << 18,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Evaluate a density on a regular grid, a chunk of points at a time.

    Points are generated per chunk from their flat index, so memory is O(chunk), not O(res³).

    Args:
        density_fn: points [P, 3] float32 on `device` -> density [P] or [P, 1].
        resolution: grid points per axis.
        box_size: side of the cube, centred at the origin (the tri-plane `box_warp`).
        chunk: points per call of `density_fn`.
        device: where the points are created.

    Returns:
        float32 [res, res, res] indexed [ix, iy, iz] (x slowest).
    """
    if resolution < 2 or chunk < 1:
        raise ValueError(f"need resolution >= 2 and chunk >= 1, got {resolution}, {chunk}")
    axis = torch.as_tensor(grid_axis(resolution, box_size), dtype=torch.float32, device=device)
    total = resolution ** 3
    out = np.empty(total, np.float32)
    for start in range(0, total, chunk):
        index = torch.arange(start, min(start + chunk, total), device=device)
        ix, rest = index // (resolution * resolution), index % (resolution * resolution)
        points = torch.stack([axis[ix], axis[rest // resolution], axis[rest % resolution]], dim=-1)
        sigma = density_fn(points).reshape(-1)
        assert sigma.shape[0] == len(index), (sigma.shape, len(index))
        out[start:start + len(index)] = sigma.float().cpu().numpy()
    return out.reshape(resolution, resolution, resolution)


def official_border(resolution: int) -> int:
    """Voxels trimmed at each face of the cube by the official extraction: int(30·res/256)."""
    return int(30 * resolution / 256)


def clear_border(volume: np.ndarray, width: int, value: float = BORDER_VALUE) -> np.ndarray:
    """Overwrite a slab of `width` voxels at every face of the cube.

    Args:
        volume: [X, Y, Z].
        width: slab thickness in voxels (0 = unchanged).
        value: what the slab is set to.

    Returns:
        A new [X, Y, Z] array.
    """
    out = volume.copy()
    if width > 0:
        for axis in range(3):
            index = [slice(None)] * 3
            index[axis] = slice(0, width)
            out[tuple(index)] = value
            index[axis] = slice(-width, None)
            out[tuple(index)] = value
    return out


def extract_mesh(volume: np.ndarray, level: float = OFFICIAL_LEVEL, box_size: float = 1.0) -> Mesh:
    """Marching cubes on a density grid sampled by `sample_density_grid`.

    Args:
        volume: float [R, R, R] density, [ix, iy, iz], high inside the object.
        level: surface level.
        box_size: side of the cube the grid spans.

    Returns:
        The surface in world coordinates.

    Raises:
        UsageError: scikit-image is not installed, or the density never crosses `level`.
    """
    try:
        from skimage.measure import marching_cubes
    except ImportError as err:
        raise UsageError("mesh export needs scikit-image; install it with: pip install scikit-image") from err
    low, high = float(volume.min()), float(volume.max())
    if not low < level < high:
        raise UsageError(f"the density ranges from {low:.3g} to {high:.3g} and never crosses the surface "
                         f"level {level:g}, so there is no surface to export")
    resolution = volume.shape[0]
    assert volume.shape == (resolution,) * 3, volume.shape
    step = box_size / (resolution - 1)
    vertices, faces, _, _ = marching_cubes(volume.astype(np.float32), level=level, spacing=(step,) * 3)
    vertices = vertices - box_size / 2.0
    # scikit-image winds triangles clockwise seen from the side the values decrease to (outside here);
    # reverse them so the usual counter-clockwise rule gives outward normals.
    return Mesh(vertices=vertices.astype(np.float32), faces=np.ascontiguousarray(faces[:, ::-1]).astype(np.int32))


def write_ply(path: str | os.PathLike[str], mesh: Mesh, binary: bool = True) -> None:
    """Write a PLY file atomically (binary little-endian by default, ASCII on request).

    Args:
        path: output path.
        mesh: the mesh.
        binary: binary_little_endian when True, ascii otherwise.
    """
    vertices, faces = mesh.vertices.astype("<f4"), mesh.faces.astype("<i4")
    header = "\n".join([
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "comment written by nvsvideo",
        f"element vertex {len(vertices)}",
        "property float x", "property float y", "property float z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]) + "\n"
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            f.write(vertices.tobytes())
            records = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
            records["n"], records["i"] = 3, faces
            f.write(records.tobytes())
        else:
            np.savetxt(f, vertices, fmt="%.6f")
            np.savetxt(f, np.column_stack([np.full(len(faces), 3), faces]), fmt="%d")


def write_obj(path: str | os.PathLike[str], mesh: Mesh) -> None:
    """Write a Wavefront OBJ file atomically (1-based vertex indices)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(b"# written by nvsvideo\n")
        np.savetxt(f, mesh.vertices, fmt="v %.6f %.6f %.6f")
        np.savetxt(f, mesh.faces + 1, fmt="f %d %d %d")


def write_mesh(path: str | os.PathLike[str], mesh: Mesh) -> None:
    """Write `.ply` (binary) or `.obj`, chosen by the file suffix.

    Raises:
        UsageError: any other suffix.
    """
    if mesh_format(path) == "ply":
        write_ply(path, mesh)
    else:
        write_obj(path, mesh)


def export_mesh(
    path: str | os.PathLike[str],
    density_fn: DensityFn,
    *,
    resolution: int = 256,
    box_size: float = 1.0,
    level: float = OFFICIAL_LEVEL,
    border: int | None = None,
    chunk: int = 1 << 18,
    device: torch.device | str = "cpu",
) -> Mesh:
    """Sample, trim, mesh and write one frame's shape, as the official extraction does.

    Args:
        path: `.ply` or `.obj` output.
        density_fn: points [P, 3] -> raw density [P]; for EG3D, the frame's tri-planes through the decoder.
        resolution: grid points per axis (official 512).
        box_size: the tri-plane `box_warp`.
        level: surface level on the raw density (official 10).
        border: voxels cleared at the cube faces; None = official int(30·res/256).
        chunk: points per density call.
        device: where the points are created.

    Returns:
        The written mesh.
    """
    mesh_format(path)  # fail before the expensive sampling
    volume = sample_density_grid(density_fn, resolution, box_size, chunk, device)
    volume = clear_border(volume, official_border(resolution) if border is None else border)
    mesh = extract_mesh(volume, level, box_size)
    write_mesh(path, mesh)
    return mesh
