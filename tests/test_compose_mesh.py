"""Mesh export: density grid sampling, border trimming, marching cubes and PLY/OBJ writers."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from nvsvideo.compose.mesh import (
    Mesh,
    clear_border,
    export_mesh,
    extract_mesh,
    official_border,
    sample_density_grid,
    write_obj,
    write_ply,
)
from nvsvideo.errors import UsageError

CENTER = torch.tensor([0.08, -0.05, 0.03])
RADIUS = 0.3


def sphere_density(points: torch.Tensor) -> torch.Tensor:
    """Raw density that crosses the official level 10 on a sphere of RADIUS about CENTER."""
    return 10.0 + 40.0 * (RADIUS - (points - CENTER).norm(dim=-1))


@pytest.fixture(scope="module")
def sphere(tmp_path_factory) -> Mesh:
    pytest.importorskip("skimage")
    return export_mesh(tmp_path_factory.mktemp("mesh") / "sphere.ply", sphere_density, resolution=64)


def test_sphere_vertices_lie_on_the_sphere_in_world_units(sphere):
    distances = np.linalg.norm(sphere.vertices - CENTER.numpy(), axis=1)
    voxel = 1.0 / 63
    assert np.abs(distances - RADIUS).max() < 0.5 * voxel
    # An off-centre sphere pins the axis order and signs: no flip or transpose of x, y, z.
    assert np.allclose(sphere.vertices.mean(0), CENTER.numpy(), atol=0.005)


def test_faces_point_outwards(sphere):
    corners = sphere.vertices[sphere.faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert np.mean(np.sum(normals * (corners.mean(1) - CENTER.numpy()), axis=1) > 0) > 0.999


def test_grid_order_and_chunking():
    calls = []

    def density(points: torch.Tensor) -> torch.Tensor:
        calls.append(len(points))
        return points[:, 0] * 100 + points[:, 1] * 10 + points[:, 2]

    grid = sample_density_grid(density, resolution=5, box_size=2.0, chunk=7)
    assert max(calls) <= 7 and sum(calls) == 125
    axis = np.linspace(-1, 1, 5)
    expected = axis[:, None, None] * 100 + axis[None, :, None] * 10 + axis[None, None, :]
    assert grid.shape == (5, 5, 5) and np.allclose(grid, expected)


def test_official_border_trims_the_box_faces():
    assert official_border(256) == 30 and official_border(512) == 60 and official_border(64) == 7
    cleared = clear_border(np.ones((10, 10, 10), np.float32), 2)
    assert cleared[2:-2, 2:-2, 2:-2].min() == 1 and cleared[:2].max() == -1000 and cleared[:, :, -2:].max() == -1000
    assert np.array_equal(clear_border(np.ones((4, 4, 4)), 0), np.ones((4, 4, 4)))


def test_border_removes_a_slab_at_the_box_edge(tmp_path):
    pytest.importorskip("skimage")

    def with_slab(points: torch.Tensor) -> torch.Tensor:
        return torch.maximum(sphere_density(points), 10.0 + 40.0 * (points[:, 0] - 0.45))

    trimmed = export_mesh(tmp_path / "a.ply", with_slab, resolution=64)
    assert trimmed.vertices[:, 0].max() < 0.5 - 7 / 63
    untrimmed = export_mesh(tmp_path / "b.ply", with_slab, resolution=64, border=0)
    assert untrimmed.vertices[:, 0].max() > 0.44


def read_binary_ply(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    n_vertices = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    n_faces = int(next(line for line in header if line.startswith("element face")).split()[-1])
    vertices = np.frombuffer(data, "<f4", 3 * n_vertices, end).reshape(-1, 3)
    records = np.frombuffer(data, [("n", "u1"), ("i", "<i4", (3,))], n_faces, end + 12 * n_vertices)
    assert len(data) == end + 12 * n_vertices + 13 * n_faces
    assert np.all(records["n"] == 3)
    return header, vertices, records["i"]


TETRA = Mesh(vertices=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32),
             faces=np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32))


def test_binary_ply_layout(tmp_path):
    write_ply(tmp_path / "t.ply", TETRA)
    header, vertices, faces = read_binary_ply(tmp_path / "t.ply")
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert np.array_equal(vertices, TETRA.vertices) and np.array_equal(faces, TETRA.faces)
    assert [p.name for p in tmp_path.iterdir()] == ["t.ply"], "no temporary file is left behind"


def test_ascii_ply_and_obj(tmp_path):
    write_ply(tmp_path / "t.ply", TETRA, binary=False)
    lines = (tmp_path / "t.ply").read_text().splitlines()
    body = lines[lines.index("end_header") + 1:]
    assert "format ascii 1.0" in lines and len(body) == 8
    assert np.allclose(np.loadtxt(body[:4]), TETRA.vertices) and np.array_equal(np.loadtxt(body[4:]), np.column_stack([[3] * 4, TETRA.faces]))
    write_obj(tmp_path / "t.obj", TETRA)
    lines = (tmp_path / "t.obj").read_text().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["v"] * 4 + ["f"] * 4
    assert lines[-1].split()[1:] == ["2", "3", "4"]


def test_obj_export_by_suffix(tmp_path):
    pytest.importorskip("skimage")
    mesh = export_mesh(tmp_path / "s.OBJ", sphere_density, resolution=24)
    assert (tmp_path / "s.OBJ").read_text().count("\nf ") == len(mesh.faces)


def test_bad_suffix_fails_before_sampling(tmp_path):
    def never(points: torch.Tensor) -> torch.Tensor:
        raise AssertionError("must not be called")

    with pytest.raises(UsageError, match=r"\.ply or \.obj"):
        export_mesh(tmp_path / "s.stl", never)


def test_no_surface_is_a_clear_error():
    with pytest.raises(UsageError, match="never crosses"):
        extract_mesh(np.zeros((8, 8, 8), np.float32), level=10.0)


def test_missing_scikit_image_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.measure", None)
    with pytest.raises(UsageError, match="pip install scikit-image"):
        extract_mesh(np.zeros((8, 8, 8), np.float32))
