"""TriPlaneNet (v1 and v2): invert a face crop into EG3D codes plus tri-plane corrections.

The data flow follows the official inference (see shared/interop/triplanenet_facts.md, section 2):

1. ws = psp_encoder(x256) + EG3D's average latent.
2. planes0 = EG3D backbone(ws); the initial image is rendered at the input camera
   (v2: also at the mirrored camera).
3. The tri-plane predictor reads the initial render(s) and the input residuals and returns
   offsets (v1, added to planes0) or the final planes (v2).
4. The final planes are rendered at the input camera (the reconstruction; optional).

Unlike the official scripts, a frame is inverted once: novel views are rendered later from the
returned planes with `TriPlaneNet.render`, without rerunning the encoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.models.eg3d.draws import DrawKeys, RenderId, keyed_for
from nvsvideo.models.triplanenet.offsets_v1 import TriPlaneOffsetsV1
from nvsvideo.models.triplanenet.offsets_v2 import TriPlanePredictorV2
from nvsvideo.models.triplanenet.psp import GradualStyleEncoder

if TYPE_CHECKING:
    from nvsvideo.models.eg3d.generator import TriPlaneGenerator

#: Flat indices, in the 25-float EG3D label, of the cam2world entries (0,1), (0,2), (0,3), (1,0), (2,0).
_MIRROR_NEGATED = (1, 2, 3, 4, 8)


def mirror_camera(c: torch.Tensor) -> torch.Tensor:
    """The camera that sees the horizontally flipped image: pose F.P.F with F = diag(-1, 1, 1, 1).

    Reflecting the world x axis and the camera x axis keeps a proper rotation; in the row-major
    label this negates the pose entries (0,1), (0,2), (1,0), (2,0) and the x translation (0,3).
    Intrinsics (label[16:]) are unchanged.

    Args:
        c: [B, 25] EG3D labels (row-major 4x4 cam2world, then row-major 3x3 normalised intrinsics).
    Returns:
        [B, 25] mirrored labels.
    """
    assert c.ndim == 2 and c.shape[1] == 25, c.shape
    sign = torch.ones(25, dtype=c.dtype, device=c.device)
    sign[list(_MIRROR_NEGATED)] = -1
    return c * sign


def to_encoder_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a crop to the encoders' input size the way the official datasets do.

    Bilinear without antialiasing (torchvision's tensor `Resize` of the training code); for
    512 -> 256 that is exactly a 2x2 box mean.

    Args:
        x: [B, 3, H, H] in [-1, 1].
    Returns:
        [B, 3, resolution, resolution].
    """
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)


def predictor_input_v1(x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """v1 predictor input cat[y0, x - y0]: [B,3,R,R] x2 -> [B,6,R,R] (y0 = initial render, pooled)."""
    return torch.cat([y0, x - y0], dim=1)


def predictor_input_v2(x: torch.Tensor, y0: torch.Tensor, y0_mirror: torch.Tensor) -> torch.Tensor:
    """v2 predictor input cat[y0, x - y0, flip(x) - y0_mirror]: [B,3,R,R] x3 -> [B,9,R,R].

    `y0_mirror` is the initial planes rendered at `mirror_camera(c)`; it is compared with the
    horizontally flipped input.
    """
    return torch.cat([y0, x - y0, x.flip(3) - y0_mirror], dim=1)


@dataclass(frozen=True)
class RenderOptions:
    """How TriPlaneNet runs EG3D; the defaults are those of the official inference scripts."""

    neural_rendering_resolution: int = 128
    """Volume-rendering resolution before super-resolution (TriPlaneNet always uses 128)."""
    samples_multiplier: float = 2.0
    """Factor on the generator's samples per ray; the scripts double EG3D's 48+48 to 96+96."""
    noise_mode: Literal["const", "random", "none"] = "const"
    """Noise of the tri-plane backbone; the super-resolution's comes from the generator's rendering_kwargs."""
    chunk_rays: int | None = None
    """Rays per batch item rendered at a time (bounds memory, same result); None renders all at once."""
    force_fp32: bool = False
    """Keep the super-resolution in float32 on CUDA (the official code runs it in float16 there)."""


@dataclass
class InversionResult:
    """Per-frame result of `TriPlaneNet.invert`; every tensor is batched on dim 0."""

    ws: torch.Tensor
    """[B, 14, 512] w+ codes fed to EG3D (encoder output + average latent)."""
    planes: torch.Tensor
    """[B, 96, 256, 256] final tri-planes (3 planes x 32 features, EG3D's layout)."""
    offsets: torch.Tensor
    """[B, 96, 256, 256] planes - backbone(ws): the predicted offsets (v1) or residual (v2)."""
    image: torch.Tensor | None
    """[B, 3, 512, 512] final render at the input camera, in [-1, 1] (not clamped); None if not rendered."""
    image_raw: torch.Tensor | None
    """[B, 3, N, N] the volume-rendered image before super-resolution (N = neural resolution); None if not rendered."""
    depth: torch.Tensor | None
    """[B, 1, N, N] expected ray depth of the final render; None if not rendered."""


class TriPlaneNet(nn.Module):
    """pSp latent encoder + tri-plane predictor + EG3D generator (`decoder`), as in the checkpoints."""

    def __init__(
        self,
        psp_encoder: GradualStyleEncoder,  # Image -> w+ offsets.
        triplanenet_encoder: TriPlaneOffsetsV1 | TriPlanePredictorV2,  # Renders -> tri-plane corrections.
        decoder: TriPlaneGenerator,  # Frozen EG3D generator.
        render_options: RenderOptions | None = None,  # Rendering of every EG3D call; None = official.
    ) -> None:
        super().__init__()
        self.psp_encoder = psp_encoder
        self.triplanenet_encoder = triplanenet_encoder
        self.decoder = decoder
        self.render_options = RenderOptions() if render_options is None else render_options

    @property
    def version(self) -> Literal["v1", "v2"]:
        """"v1" (offsets added to the backbone planes) or "v2" (mirror-aware, predicts the planes)."""
        return self.triplanenet_encoder.version

    @property
    def latent_avg(self) -> torch.Tensor:
        """[w_dim] EG3D's tracked average w, which the encoder's w+ offsets are relative to.

        Official TriPlaneNet reads it from a separate EG3D file; it is the generator's `w_avg`.
        """
        return self.decoder.backbone.mapping.w_avg

    def encode_ws(self, x256: torch.Tensor) -> torch.Tensor:
        """w+ codes of encoder-resolution crops: [B,3,256,256] in [-1,1] -> [B,14,512]."""
        return self.psp_encoder(x256) + self.latent_avg

    def render(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor,
        c: torch.Tensor,
        *,
        rng: torch.Generator | DrawKeys | None = None,
    ) -> dict[str, torch.Tensor]:
        """Render tri-planes with the model's `render_options`.

        Args:
            planes: [B, 96, 256, 256] tri-planes (e.g. `InversionResult.planes`).
            ws: [B, 14, 512] codes; only the super-resolution reads them.
            c: [B, 25] camera labels to render from.
            rng: source of the stochastic ray samples (`TriPlaneGenerator.render_features`); None draws from
                torch's global generator.
        Returns:
            The generator's dict: `image` [B,3,512,512], `image_raw` [B,3,N,N], `image_depth` [B,1,N,N].
        """
        options = self.render_options
        return self.decoder.render_planes(
            planes,
            ws,
            c,
            neural_rendering_resolution=options.neural_rendering_resolution,
            rng=rng,
            samples_multiplier=options.samples_multiplier,
            chunk_rays=options.chunk_rays,
            force_fp32=options.force_fp32,
        )

    def planes_from_offsets(self, ws: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Final planes from stored codes and offsets: backbone(ws) + offsets, [B,96,256,256]."""
        return self.decoder.synthesize_planes(ws, noise_mode=self.render_options.noise_mode) + offsets

    @torch.no_grad()
    def invert(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        *,
        rng: torch.Generator | DrawKeys | None = None,
        render_input_view: bool = True,
    ) -> InversionResult:
        """Invert aligned face crops once: codes, final planes and the reconstruction at the input camera.

        Renders, in this order: initial planes at `c`, v2 only: initial planes at `mirror_camera(c)`, final
        planes at `c`. A generator (or torch's global one) is drawn from in this official order, so seeding
        it reproduces the official outputs; counter keys give each render its own id (`RenderId.INITIAL`,
        `MIRROR`, `INPUT_VIEW`), so no two renders of a frame share draws.

        Args:
            x: [B, 3, 512, 512] aligned crops in [-1, 1] (crops already at 256 are used as they are).
            c: [B, 25] their camera labels.
            rng: source of the stochastic ray samples: a generator; None, torch's global generator; or `DrawKeys`
                with each frame's seed and index (its renders then do not depend on the batch it is in).
            render_input_view: render the final planes at `c`; callers that only need the planes (novel
                views) skip it, which saves one of the two (v1) or three (v2) renders.
        Returns:
            `InversionResult`; its image, image_raw and depth are None when `render_input_view` is False.
        """
        assert x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] == x.shape[-2], x.shape
        assert c.shape == (x.shape[0], 25), c.shape
        x256 = to_encoder_resolution(x, self.psp_encoder.resolution)
        ws = self.encode_ws(x256)
        planes0 = self.decoder.synthesize_planes(ws, noise_mode=self.render_options.noise_mode)
        y0 = self._render_pooled(planes0, ws, c, keyed_for(rng, RenderId.INITIAL))
        if self.version == "v1":
            offsets = self.triplanenet_encoder(predictor_input_v1(x256, y0))
            planes = planes0 + offsets
        else:
            y0_mirror = self._render_pooled(planes0, ws, mirror_camera(c), keyed_for(rng, RenderId.MIRROR))
            planes = self.triplanenet_encoder(predictor_input_v2(x256, y0, y0_mirror), planes0)
            offsets = planes - planes0
        if not render_input_view:
            return InversionResult(ws=ws, planes=planes, offsets=offsets, image=None, image_raw=None, depth=None)
        final = self.render(planes, ws, c, rng=keyed_for(rng, RenderId.INPUT_VIEW))
        return InversionResult(
            ws=ws,
            planes=planes,
            offsets=offsets,
            image=final["image"],
            image_raw=final["image_raw"],
            depth=final["image_depth"],
        )

    def _render_pooled(
        self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, rng: torch.Generator | DrawKeys | None
    ) -> torch.Tensor:
        """Render at `c` and pool the 512 image to the encoders' resolution (area mean, as trained)."""
        image = self.render(planes, ws, c, rng=rng)["image"]
        return F.adaptive_avg_pool2d(image, self.psp_encoder.resolution)

    def extra_repr(self) -> str:
        return f"version={self.version!r}, render_options={self.render_options}"
