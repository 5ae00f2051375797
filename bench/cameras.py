"""Cameras and crops against the official preprocessing, per landmark backend, and landmark speed.

    python bench/cameras.py [--json] [--calibrate] [--per-photo] [--crop-points] [--mtcnn-sizes] [--no-speed]

Development set: the official crops in shared/fixtures/pose_labels/ plus shared/fixtures/eg3d_example.png,
each with the camera label the official pipeline gave it. Each backend aligns each photo as `nvsvideo
align` does: `mesh` (the default: mesh pose, MTCNN's five crop points), `mesh_points` (the mesh's own five
points, as before MTCNN) and `dlib`; reported per backend:
- faces found;
- rotation error: angle between our cam2world rotation and the label's (mean, median, max), and the
  yaw and pitch differences (LookAt parameters) separately;
- crop: these photos are official crops already, so the official alignment of each is the identity;
  the offset of our crop's centre from the photo's centre (pixels of 512) and the scale error, of the
  exact official crop (integer truncations included: scale in steps of 1/700, up to 0.73 px of offset)
  and of the continuous square videos use (`square_*`), with their signed means (`*_bias`): a bias is
  what a vertex choice or a constant could remove, the spread around it is not.
Speed: frames/s of decode + landmarks + pose on the real clip (640x360) and on its 3x upscale (1920x1080
encoded once into a temporary file), every backend in the same run.

`--per-photo` prints each photo's signed crop offset and scale error per backend, and for the mesh its
mirror bias: half the sum of the x offsets of the photo and of its mirror image, which a mirror-symmetric
landmark model would make zero.

`--crop-points` compares, for the mesh, the five points the crop uses (eye-contour centres, nose tip 1,
outer mouth corners 61/291) with the other readings of the official points' convention (eye corners' or
lid midpoints' centres, inner mouth corners, nose vertex 4), all on the continuous square; and two
corrections: the mesh averaged with the mirrored photo's (which removes the landmark model's left-right
asymmetry), and one constant x shift of the crop centre, calibrated on six photos and measured on the
seventh in turn.

`--mtcnn-sizes` prints the crop errors (exact official crop) with MTCNN's region resampled to other sizes than
the default `mesh_backend.MTCNN_SIZE`: how much the crop depends on that choice.

`--calibrate` prints the rotation still left between the mesh fits and the labels: the chordal mean of
label^T @ fit over the photos, as a rotation vector in degrees. `mesh_pose.CANONICAL_TO_BFM_ROTATION` is
that rotation measured with the constant at zero (it then prints about zero).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import lookat_angles, pose_from_label, rotation_angle_deg, split_label
from nvsvideo.face.backends.mesh_backend import MeshBackend
from nvsvideo.face.crop import (
    crop_five_points,
    crop_square_from_points,
    crop_transform_from_points,
    crop_transform_from_square,
    offset_from_identity,
)
from nvsvideo.face.landmarks import LandmarkConfig, create_backend
from nvsvideo.face.mesh_pose import LEFT_EYE, MOUTH_CORNERS, NOSE_TIP, RIGHT_EYE, mirror_vertices
from nvsvideo.face.types import faces_by_size
from nvsvideo.pipelines.align import estimate_camera
from nvsvideo.video import VideoReader
from nvsvideo.weights.registry import resolve_weights_dir

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
#: The default (mesh pose, MTCNN's five crop points), the mesh alone, and dlib.
BACKENDS = ("mesh", "mesh_points", "dlib")
MTCNN_SIZES = (192, 256, 320, 384, 448, 512)
CLIP = FIXTURES / "single_face.mp4"
UPSCALE = 3


def dev_set() -> list[tuple[Path, np.ndarray]]:
    """(photo, official label [25]) for every photo of the development set."""
    folder = FIXTURES / "pose_labels"
    items = [(folder / name, np.asarray(label, np.float64))
             for name, label in json.loads((folder / "dataset.json").read_text())["labels"]]
    # The EG3D example's label file names the photo as the official repository does (example.png).
    (_, label), = json.loads((FIXTURES / "eg3d_example_dataset.json").read_text())["labels"]
    return [*items, (FIXTURES / "eg3d_example.png", np.asarray(label, np.float64))]


@dataclass
class Result:
    """One photo through one backend."""

    found: bool
    label: np.ndarray | None = None
    offset: np.ndarray | None = None  # [2] crop px, exact official crop
    scale_error: float = float("nan")
    square_offset: np.ndarray | None = None  # [2] crop px, continuous square
    square_scale_error: float = float("nan")
    fit: np.ndarray | None = None  # head rotation, for calibration


def align_photo(backend, image: np.ndarray) -> Result:
    faces = faces_by_size(backend.detect(image[None])[0])
    if not faces:
        return Result(found=False)
    face = faces[0]
    points = crop_five_points(face.landmarks, face.crop_points)
    tf = crop_transform_from_points(points, image.shape[:2])
    label, pose = estimate_camera(face.landmarks, face.mesh, tf)
    offset, scale_error = offset_from_identity(tf, image.shape[:2])
    square = crop_transform_from_square(crop_square_from_points(points, image.shape[0]))
    square_offset, square_scale_error = offset_from_identity(square, image.shape[:2])
    return Result(found=True, label=label, offset=offset, scale_error=scale_error, square_offset=square_offset,
                  square_scale_error=square_scale_error, fit=pose.rotation)


def read_photo(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _crop_errors(offsets: np.ndarray, scales: np.ndarray, prefix: str) -> dict[str, float | list[float]]:
    centre, pct = np.linalg.norm(offsets, axis=1), scales * 100
    return {
        f"{prefix}crop_center_median_px": float(np.median(centre)), f"{prefix}crop_center_max_px": float(centre.max()),
        f"{prefix}crop_center_bias_px": offsets.mean(0).round(2).tolist(),
        f"{prefix}scale_error_mean_pct": float(np.abs(pct).mean()), f"{prefix}scale_error_max_pct": float(np.abs(pct).max()),
        f"{prefix}scale_error_bias_pct": float(pct.mean()),
    }


def errors(results: list[Result], labels: list[np.ndarray]) -> dict:
    pairs = [(r, lab) for r, lab in zip(results, labels, strict=True) if r.found]
    ours = np.stack([split_label(r.label)[0] for r, _ in pairs])
    theirs = np.stack([split_label(lab)[0] for _, lab in pairs])
    angle = rotation_angle_deg(ours[:, :3, :3], theirs[:, :3, :3])
    diff = np.abs(lookat_angles(ours) - lookat_angles(theirs))
    found = [r for r, _ in pairs]
    return {
        "faces_found": len(pairs), "photos": len(results),
        "rot_mean_deg": float(angle.mean()), "rot_median_deg": float(np.median(angle)), "rot_max_deg": float(angle.max()),
        "yaw_mean_deg": float(diff[:, 0].mean()), "yaw_max_deg": float(diff[:, 0].max()),
        "pitch_mean_deg": float(diff[:, 1].mean()), "pitch_max_deg": float(diff[:, 1].max()),
        **_crop_errors(np.stack([r.offset for r in found]), np.array([r.scale_error for r in found]), ""),
        **_crop_errors(np.stack([r.square_offset for r in found]), np.array([r.square_scale_error for r in found]),
                       "square_"),
    }


def per_photo(name: str, backend, items: list[tuple[Path, np.ndarray]], results: list[Result]) -> dict:
    """Each photo's signed crop offset and scale error; for the mesh also its mirror bias (x, crop px)."""
    rows = {}
    for (path, _), r in zip(items, results, strict=True):
        if not r.found:
            rows[path.stem] = None
            continue
        row = {"offset_px": r.offset.round(2).tolist(), "scale_error_pct": round(r.scale_error * 100, 2),
               "square_offset_px": r.square_offset.round(2).tolist(),
               "square_scale_error_pct": round(r.square_scale_error * 100, 2)}
        if name == "mesh":
            mirrored = align_photo(backend, np.ascontiguousarray(read_photo(path)[:, ::-1]))
            if mirrored.found:
                row["mirror_bias_px"] = round(float(r.square_offset[0] + mirrored.square_offset[0]) / 2, 2)
        rows[path.stem] = row
    return rows


#: Readings of the official five points' convention on the mesh (vertex groups averaged; subject's right first).
EYE_CHOICES = {"contour": (RIGHT_EYE, LEFT_EYE), "corners": ((33, 133), (362, 263)),
               "lid_midpoints": ((159, 145), (386, 374))}
MOUTH_CHOICES = {"outer": MOUTH_CORNERS, "inner": (78, 308)}
NOSE_CHOICES = {"1": (NOSE_TIP,), "4": (4,)}


def mesh_five(mesh: np.ndarray, eyes, mouth, nose) -> np.ndarray:
    """Five points [5, 2] from vertex groups of a mesh [468, >=2]."""
    groups = [eyes[0], eyes[1], nose, (mouth[0],), (mouth[1],)]
    return np.stack([mesh[list(group), :2].mean(0) for group in groups])


def square_offsets(points: list[np.ndarray], shapes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Offsets [N, 2] and scale errors [N] of the continuous squares of five points per photo."""
    found = [offset_from_identity(crop_transform_from_square(crop_square_from_points(p, hw[0])), hw)
             for p, hw in zip(points, shapes, strict=True)]
    return np.stack([o for o, _ in found]), np.array([e for _, e in found])


def crop_points(backend, items: list[tuple[Path, np.ndarray]]) -> dict:
    """See `--crop-points` in the module docstring."""
    photos = [read_photo(path) for path, _ in items]
    shapes = [p.shape[:2] for p in photos]
    meshes = [faces_by_size(backend.detect(p[None])[0])[0].mesh for p in photos]
    mirrored = []
    for photo in photos:
        mesh = faces_by_size(backend.detect(np.ascontiguousarray(photo[:, ::-1])[None])[0])[0].mesh[mirror_vertices()]
        mesh[:, 0] = photo.shape[1] - 1 - mesh[:, 0]
        mirrored.append(mesh)
    report = {}
    for (eye, eyes), (mouth, corners), (nose, tip) in itertools.product(
            EYE_CHOICES.items(), MOUTH_CHOICES.items(), NOSE_CHOICES.items()):
        offsets, scales = square_offsets([mesh_five(m, eyes, corners, tip) for m in meshes], shapes)
        report[f"eyes {eye}, mouth {mouth}, nose {nose}"] = _crop_errors(offsets, scales, "")
    current = (EYE_CHOICES["contour"], MOUTH_CHOICES["outer"], NOSE_CHOICES["1"])
    offsets, scales = square_offsets([mesh_five((m + w) / 2, *current) for m, w in zip(meshes, mirrored, strict=True)],
                                     shapes)
    report["mirror-averaged mesh"] = _crop_errors(offsets, scales, "")
    # The photos are official 512 crops, so crop pixels are the same fraction of the face scale in each.
    offsets, scales = square_offsets([mesh_five(m, *current) for m in meshes], shapes)
    left_out = offsets.copy()
    for i in range(len(offsets)):
        left_out[i, 0] -= np.delete(offsets[:, 0], i).mean()
    report["x shift, leave-one-out"] = {**_crop_errors(left_out, scales, ""),
                                        "shift_px_all_photos": round(float(offsets[:, 0].mean()), 2)}
    return report


def mtcnn_sizes(weights: Path, items: list[tuple[Path, np.ndarray]]) -> dict:
    """See `--mtcnn-sizes` in the module docstring."""
    report = {}
    for size in MTCNN_SIZES:
        backend = MeshBackend(weights, torch.device("cpu"), mtcnn_size=size)
        results = [align_photo(backend, read_photo(path)) for path, _ in items]
        report[str(size)] = _crop_errors(np.stack([r.offset for r in results]), np.array([r.scale_error for r in results]), "")
    return report


def calibration(results: list[Result], labels: list[np.ndarray]) -> np.ndarray:
    """Rotation vector (degrees) C with label ~ fit @ C^T, as a chordal mean over the photos."""
    total = np.zeros((3, 3))
    for r, label in zip(results, labels, strict=True):
        if r.found:
            total += pose_from_label(label)[0].T @ r.fit
    u, _, vt = np.linalg.svd(total)
    mean = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return np.degrees(Rotation.from_matrix(mean).as_rotvec())


def make_backend(name: str, weights: Path):
    """A backend by name; `mesh_points` is the mesh backend without MTCNN (its crops from the mesh's points)."""
    if name == "mesh_points":
        return MeshBackend(weights, torch.device("cpu"), mtcnn=False)
    return create_backend(LandmarkConfig(backend=name, weights_dir=weights), torch.device("cpu"))


def throughput(backend_name: str, video: Path, weights: Path) -> float:
    """Frames/s of decode + landmarks + pose of the largest face, over the whole clip."""
    backend = make_backend(backend_name, weights)
    frames, start = 0, time.perf_counter()
    for batch in VideoReader(video, batch_size=16):
        for faces in backend.detect(batch.frames, start=int(batch.indices[0])):
            if faces:
                face = faces_by_size(faces)[0]
                points = crop_five_points(face.landmarks, face.crop_points)
                estimate_camera(face.landmarks, face.mesh, crop_transform_from_points(points, batch.frames.shape[1:3]))
        frames += len(batch)
    return frames / (time.perf_counter() - start)


def upscaled_clip(folder: Path) -> Path:
    """The clip at 3x (bicubic), encoded once (x264, near-lossless)."""
    import av

    out = folder / "clip_1080p.mp4"
    with av.open(str(CLIP)) as src, av.open(str(out), "w") as dst:
        stream_in = src.streams.video[0]
        stream = dst.add_stream("libx264", rate=stream_in.average_rate, options={"crf": "12", "preset": "veryfast"})
        stream.width, stream.height = stream_in.width * UPSCALE, stream_in.height * UPSCALE
        stream.pix_fmt = "yuv420p"
        for frame in src.decode(stream_in):
            big = frame.to_image().resize((stream.width, stream.height), Image.Resampling.BICUBIC)
            dst.mux(stream.encode(av.VideoFrame.from_image(big)))
        dst.mux(stream.encode())
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--calibrate", action="store_true", help="print the canonical-to-BFM rotation fitted here")
    parser.add_argument("--per-photo", action="store_true", help="print each photo's crop offset and scale error")
    parser.add_argument("--crop-points", action="store_true", help="compare readings of the five points on the mesh")
    parser.add_argument("--mtcnn-sizes", action="store_true", help="crop errors for other sizes of MTCNN's region")
    parser.add_argument("--no-speed", action="store_true", help="skip the frames/s measurements")
    args = parser.parse_args(argv or [])
    # One thread, like dlib: on a shared machine extra torch threads mostly wait for the busy cores.
    torch.set_num_threads(1)
    weights = resolve_weights_dir(None, os.environ)
    items = dev_set()
    labels = [label for _, label in items]
    report: dict = {}
    for name in BACKENDS:
        backend = make_backend(name, weights)
        results = [align_photo(backend, read_photo(path)) for path, _ in items]
        report[name] = errors(results, labels)
        if args.per_photo:
            report[f"{name}_per_photo"] = per_photo(name, backend, items, results)
        if args.crop_points and name == "mesh":
            report["mesh_crop_points"] = crop_points(backend, items)
        if args.mtcnn_sizes and name == "mesh":
            report["mesh_mtcnn_sizes"] = mtcnn_sizes(weights, items)
        if args.calibrate and name == "mesh":
            report["mesh_calibration_rotvec_deg"] = calibration(results, labels).round(3).tolist()
    if not args.no_speed:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            big = upscaled_clip(Path(tmp))
            for name in BACKENDS:
                report[name]["fps_640x360"] = throughput(name, CLIP, weights)
                report[name]["fps_1920x1080"] = throughput(name, big, weights)
        for other in ("dlib", "mesh_points"):
            report[f"mesh_vs_{other}_speed"] = {size: round(report["mesh"][size] / report[other][size], 2)
                                                for size in ("fps_640x360", "fps_1920x1080")}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name, numbers in report.items():
            print(name, json.dumps(numbers) if not isinstance(numbers, dict) else
                  ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in numbers.items()))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
