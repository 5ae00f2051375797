"""Latent edits of cached inversions: StyleCLIP mappers, linear directions, strengths and ramps.

See `nvsvideo.edits.edit` for how edits combine and what happens to the tri-plane offsets.
"""

from nvsvideo.edits.directions import LinearDirection, load_direction
from nvsvideo.edits.edit import (
    Edit,
    EditSpec,
    OffsetPolicy,
    apply_edits,
    available_edits,
    edited_frames,
    load_edit,
    offset_weights,
    parse_edit_specs,
    resolve_edit,
)
from nvsvideo.edits.mapper import LatentMapper, load_mapper
from nvsvideo.edits.ramp import Ramp, parse_ramp

__all__ = [
    "Edit",
    "EditSpec",
    "LatentMapper",
    "LinearDirection",
    "OffsetPolicy",
    "Ramp",
    "apply_edits",
    "available_edits",
    "edited_frames",
    "load_direction",
    "load_edit",
    "load_mapper",
    "offset_weights",
    "parse_edit_specs",
    "parse_ramp",
    "resolve_edit",
]
