"""How a video's YUV samples map to RGB (matrix, range) and what they mean (primaries, transfer).

The reader converts decoded pictures to RGB with the source's own matrix and range, and the writer
converts back with the same ones and writes the same tags, so a pixel nvsvideo does not touch comes
back as it went in (within one level; 4:2:0 subsampling of sharp colour edges aside). Codes are those
of ISO/IEC 23091-2 (H.273), which FFmpeg and the H.264/HEVC headers use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from av.video.reformatter import Interpolation

#: Matrix codes swscale has coefficients for: BT.709, FCC, BT.470BG and SMPTE 170M (both BT.601),
#: SMPTE 240M, BT.2020 (non-constant and constant luminance).
SWSCALE_MATRICES = frozenset({1, 4, 5, 6, 7, 9, 10})
UNSPECIFIED = 2
"""The H.273 code for "unspecified" matrix, primaries and transfer."""
LIMITED, FULL = 1, 2
"""FFmpeg's range codes: limited ("tv", 16-235) and full ("pc", 0-255)."""

#: Pixel formats whose decoded pictures can be composed and encoded as they are (8-bit 4:2:0, the encoder's own).
PLANAR_420 = frozenset({"yuv420p", "yuvj420p"})

#: swscale's default YUV <-> RGB paths round with a bias (luma came back 1-3 levels darker after one
#: round trip) and, decoding, interpolate chroma coarsely; accurate rounding with full horizontal chroma
#: interpolation makes the round trip exact on luma and within one level on chroma. It costs about 10 ms
#: more per 1080p frame decoding (one thread), nothing encoding.
DECODE_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
ENCODE_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND

#: (Kr, Kb) luma weights of red and blue per matrix code (H.273); green is 1 - Kr - Kb.
LUMA_WEIGHTS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
                9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}

_NAMES = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020c",
          8: "film", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67",
          UNSPECIFIED: "unspecified"}


@dataclass(frozen=True)
class Colour:
    """The colour description a video's frames are converted with and its output is tagged with."""

    matrix: int
    """YUV <-> RGB matrix (H.273 MatrixCoefficients), always one swscale implements."""
    range: int
    """`LIMITED` or `FULL`."""
    primaries: int
    """H.273 ColourPrimaries, copied as tagged (2: untagged)."""
    transfer: int
    """H.273 TransferCharacteristics, copied as tagged (2: untagged); pixels are never re-linearised."""

    def describe(self) -> str:
        """E.g. "bt709 matrix, limited range, primaries bt709, transfer bt709"."""
        name = _NAMES.get
        return (f"{name(self.matrix, str(self.matrix))} matrix, {'full' if self.range == FULL else 'limited'} range, "
                f"primaries {name(self.primaries, str(self.primaries))}, transfer {name(self.transfer, str(self.transfer))}")


BT709 = Colour(matrix=1, range=LIMITED, primaries=1, transfer=1)
"""What nvsvideo writes when there is no source to follow (`sample`, depth videos)."""


def resolve_colour(matrix: int, colour_range: int, primaries: int, transfer: int, *, pix_fmt: str,
                   width: int, height: int) -> Colour:
    """The colour a decoder's tags describe, with the gaps filled as players fill them.

    An untagged (or, for swscale, unknown) matrix is BT.709 for HD sizes and BT.601 below, the guess
    players make; an untagged range is limited unless the pixel format is a full-range "yuvj" one.
    """
    if matrix not in SWSCALE_MATRICES:
        matrix = 1 if width > 1024 or height > 576 else 6
    full = colour_range == FULL or (colour_range != LIMITED and pix_fmt.startswith("yuvj"))
    return Colour(matrix=matrix, range=FULL if full else LIMITED, primaries=primaries, transfer=transfer)


def rgb_to_yuv420(image: np.ndarray, colour: Colour) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB [H, W, 3] (even H, W) -> uint8 Y [H, W], Cb and Cr [H/2, W/2] by `colour`'s matrix and range.

    The conversion is `nvsvideo.compose.yuv.rgb_to_ycbcr420`'s, rounded half up. The writer uses this for full
    range only: swscale's RGB -> full-range YUV scales chroma by 224/255 (measured: pure (0, 0, 20) gives Cb 137,
    not 138), a desaturation its own decoder does not undo; its limited-range path is exact and faster.
    """
    import torch  # lazily: colour facts are read before torch loads (the checks before work)

    from nvsvideo.compose.yuv import rgb_to_ycbcr420, round_levels

    planes = rgb_to_ycbcr420(torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32), colour)
    y, cb, cr = (round_levels(p).numpy() for p in planes)
    return y, cb, cr
