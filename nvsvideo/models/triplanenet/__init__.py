"""TriPlaneNet v1 and v2: invert a face crop into EG3D w+ codes and corrected tri-planes.

`load_triplanenet(path)` reads an official checkpoint (variant detected from the weights) and
`TriPlaneNet.invert` inverts a batch of aligned crops once; `TriPlaneNet.render` renders the
returned planes from any camera.
"""

from nvsvideo.models.triplanenet.checkpoint import (
    Variant,
    build_triplanenet,
    load_triplanenet,
    read_triplanenet,
)
from nvsvideo.models.triplanenet.model import InversionResult, RenderOptions, TriPlaneNet, mirror_camera

__all__ = [
    "InversionResult",
    "RenderOptions",
    "TriPlaneNet",
    "Variant",
    "build_triplanenet",
    "load_triplanenet",
    "mirror_camera",
    "read_triplanenet",
]
