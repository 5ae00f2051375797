"""Tri-plane volume rendering as in EG3D: rays, plane sampling, OSG decoder, stratified + importance sampling.

Conventions (see `shared/interop/eg3d_facts.md` §3.3-3.6):
- rays are unit-length, depths are Euclidean distances from the camera centre;
- the three planes are sampled at (x, y), (x, z) and (z, x) — the official axis quirk every released
  checkpoint was trained with (NVlabs/eg3d issue #67);
- density is softplus(sigma - 1); compositing uses interval midpoints (MipRayMarcher2);
- the two random draws of a render (stratified jitter, importance uniforms) are explicit tensors
  (`SampleDraws`) drawn up front, so ray chunking does not change the result: either from a
  `torch.Generator` (or torch's global one) in the official order and shapes, so a seeded render
  reproduces the official one, or from counter keys (`draws.DrawKeys`: seed, frame, render id), a pure
  function of each item's keys computed on the model's device, which the video pipelines use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.models.eg3d.draws import DrawKeys, counter_uniforms
from nvsvideo.models.eg3d.layers import FullyConnectedLayer
from nvsvideo.models.kernels import kernels_for

#: Feature channels per plane and the number of planes of an EG3D tri-plane.
PLANE_CHANNELS = 32
NUM_PLANES = 3
#: Which point coordinate (x=0, y=1, z=2) runs along the columns and the rows of each plane.
_PLANE_COLUMN_AXES = [0, 0, 2]
_PLANE_ROW_AXES = [1, 2, 0]
#: Samples per decoder pass when the caller gives no ray chunk: a whole 128 x 128 image at 48 samples per
#: ray (about 0.5 GB of intermediates). Measured on the 2-core CPU: chunks of 2048 rays render 1.5x faster
#: on a quiet machine (cache-resident, no page faults) but 3x slower when other jobs share the cores,
#: because each of their many small ops then waits for a descheduled thread; few large ops are robust.
DEFAULT_CHUNK_SAMPLES = 128 * 128 * 48


@dataclass(frozen=True)
class RenderSettings:
    """The rendering options a forward pass uses, read from the checkpoint's `rendering_kwargs`."""

    ray_start: float
    """Distance of the first coarse sample from the camera centre."""
    ray_end: float
    """Distance of the last coarse sample (before jitter)."""
    depth_resolution: int
    """Stratified (coarse) samples per ray."""
    depth_resolution_importance: int
    """Importance (fine) samples per ray; 0 disables the second pass."""
    box_warp: float
    """Side of the cube the tri-plane spans, centred at the origin."""
    disparity_space_sampling: bool = False
    """Place coarse samples uniformly in inverse depth instead of depth."""
    white_back: bool = False
    """Composite onto white instead of black."""

    @classmethod
    def from_rendering_kwargs(cls, kwargs: dict, samples_multiplier: float = 1.0) -> RenderSettings:
        """Validate official `rendering_kwargs` and scale the sample counts as the official scripts do.

        Raises:
            WeightsError: for options of other EG3D variants this renderer does not implement.
        """
        if kwargs.get("clamp_mode", "softplus") != "softplus":
            raise WeightsError(f"rendering clamp_mode {kwargs['clamp_mode']!r} is not supported; only the "
                               "'softplus' mode of the released EG3D checkpoints is implemented")
        if kwargs["ray_start"] == "auto" or kwargs["ray_end"] == "auto":
            raise WeightsError("rendering with ray_start/ray_end 'auto' (ShapeNet-style checkpoints) is not "
                               "supported; use an FFHQ or AFHQ checkpoint with fixed ray bounds")
        if kwargs.get("density_noise", 0) > 0:
            raise WeightsError("density_noise > 0 is a training-time option; set it to 0 for rendering")
        coarse = int(kwargs["depth_resolution"] * samples_multiplier)
        if coarse < 2:
            raise UsageError(f"a samples multiplier of {samples_multiplier} leaves {coarse} depth samples per ray; "
                             "at least 2 are needed, so use a larger multiplier")
        return cls(
            ray_start=float(kwargs["ray_start"]),
            ray_end=float(kwargs["ray_end"]),
            depth_resolution=coarse,
            depth_resolution_importance=int(kwargs["depth_resolution_importance"] * samples_multiplier),
            box_warp=float(kwargs["box_warp"]),
            disparity_space_sampling=bool(kwargs.get("disparity_space_sampling", False)),
            white_back=bool(kwargs.get("white_back", False)),
        )


@dataclass(frozen=True)
class SampleDraws:
    """The two random tensors of one render, in the official draw order."""

    jitter: torch.Tensor
    """[N, M, D] uniforms in [0, 1) that jitter the stratified depths."""
    importance: torch.Tensor
    """[N, M, D_imp] uniforms in [0, 1) that drive inverse-CDF importance sampling."""

    @classmethod
    def draw(cls, batch: int, num_rays: int, settings: RenderSettings, rng: torch.Generator | DrawKeys | None,
             device: torch.device) -> SampleDraws:
        """Both tensors, on `device`, from a generator (torch's global one when None) or from counter keys.

        From a generator, shapes and order equal the official code's `rand_like([N, M, D, 1])` then
        `rand([N*M, D_imp])` (drawn on the generator's device), so a generator seeded like the official global
        one gives bitwise the same numbers. From `DrawKeys` (one frame index per batch item) each item's draws
        depend only on its keys: not on the batch, the device or the ray chunking.
        """
        if isinstance(rng, DrawKeys):
            assert len(rng.frames) == batch, f"{len(rng.frames)} frame keys for a batch of {batch}"
            jitter, importance = counter_uniforms(
                rng, num_rays, (settings.depth_resolution, settings.depth_resolution_importance), device)
            return cls(jitter, importance)
        gen_device = rng.device if rng is not None else device
        jitter = torch.rand((batch, num_rays, settings.depth_resolution, 1), generator=rng, device=gen_device)
        importance = torch.rand((batch * num_rays, settings.depth_resolution_importance), generator=rng,
                                device=gen_device)
        return cls(jitter.reshape(batch, num_rays, -1).to(device),
                   importance.reshape(batch, num_rays, -1).to(device))


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One unit-length ray through the centre of every pixel, in row-major pixel order.

    Args:
        cam2world: [N, 4, 4] OpenCV-convention camera-to-world matrices.
        intrinsics: [N, 3, 3] intrinsics normalised by image size (fx, fy, cx, cy, skew).
        resolution: R, rendering resolution (R x R pixels).
    Returns:
        origins [N, R*R, 3] and directions [N, R*R, 3].
    """
    n = cam2world.shape[0]
    assert cam2world.shape[1:] == (4, 4) and intrinsics.shape == (n, 3, 3), "unexpected camera shapes"
    dtype, device = cam2world.dtype, cam2world.device
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    steps = torch.arange(resolution, dtype=dtype, device=device) * (1.0 / resolution) + (0.5 / resolution)
    v, u = torch.meshgrid(steps, steps, indexing="ij")  # v: row coordinate, u: column coordinate
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    x_cam = (u - cx + cy * sk / fy - sk * v / fy) / fx
    y_cam = (v - cy) / fy
    ones = torch.ones_like(x_cam)
    cam_points = torch.stack([x_cam, y_cam, ones, ones], dim=1)  # [N, 4, M]
    world_points = torch.bmm(cam2world, cam_points).transpose(1, 2)[:, :, :3]
    origins = cam2world[:, None, :3, 3]
    directions = F.normalize(world_points - origins, dim=2)
    return origins.expand_as(directions).contiguous(), directions


def plane_table(planes: torch.Tensor) -> torch.Tensor:
    """Lay the tri-planes out as a lookup table for the 'embedding_bag' variant of `sample_triplane`.

    Each plane gets a one-texel zero border (this reproduces grid_sample's zero padding exactly once
    indices are clamped to it) and channels go last, so a bilinear corner is one contiguous row.

    Args:
        planes: [N, 3, C, H, W].
    Returns:
        [N * 3 * (H + 2) * (W + 2), C].
    """
    channels = planes.shape[2]
    padded = F.pad(planes, (1, 1, 1, 1))
    return padded.permute(0, 1, 3, 4, 2).reshape(-1, channels)


def prepare_planes(planes: torch.Tensor) -> torch.Tensor:
    """Tri-planes [N, 3, C, R, R] in the layout the device's `triplane` kernel samples from.

    'embedding_bag': the 2-D table of `plane_table`; 'grid_sample': the planes as [N * 3, C, R, R].
    """
    if kernels_for(planes.device).triplane == "grid_sample":
        return planes.reshape(-1, *planes.shape[2:])
    return plane_table(planes)


def sample_triplane(table: torch.Tensor, resolution: int, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Mean of the bilinear tri-plane features at 3D points, with zero outside the box.

    grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False) on the planes at (x, y), (x, z),
    (z, x) (grid x = column), then the mean over planes. The layout of `table` picks the variant: a 2-D table
    from `plane_table` is read by one weighted embedding-bag gather of 12 corner rows per point (texel
    arithmetic shared between planes; fastest on the CPU); 4-D planes from `prepare_planes` go to grid_sample.

    Args:
        table: [N * 3 * (R + 2) * (R + 2), C] from `plane_table`, or [N * 3, C, R, R].
        resolution: R, side of one (square) plane.
        points: [N, P, 3] world points.
        box_warp: side of the cube [-box_warp/2, box_warp/2]^3 the planes span.
    Returns:
        [N, P, C] features.
    """
    if table.ndim == 4:
        return _sample_triplane_grid(table, points, box_warp)
    n, p, _ = points.shape
    device = points.device
    stride = resolution + 2  # padded row length
    # Work axis-major ([axis, point]) so every elementwise op below runs over contiguous points.
    coords = points.reshape(n * p, 3).t().contiguous()  # [3, NP]
    # Continuous texel coordinate of x, y and z (align_corners=False) and the two texels around it.
    u = ((coords * (2 / box_warp) + 1) * resolution - 1) / 2
    u0 = u.floor()
    weights = torch.stack([(u0 + 1) - u, u - u0])  # [2 corners, 3 axes, NP]
    # Clamping into the zero border makes every out-of-box texel read zero; +1 skips the border.
    texels = torch.stack([u0, u0 + 1]).clamp_(-1, resolution).add_(1).int()
    # Plane axes as the released checkpoints were trained: XY, XZ and a transposed XZ (never YZ).
    col_axes = torch.tensor(_PLANE_COLUMN_AXES, device=device)
    row_axes = torch.tensor(_PLANE_ROW_AXES, device=device)
    plane_index = (torch.arange(NUM_PLANES, dtype=torch.int32, device=device)[:, None]
                   + NUM_PLANES * torch.arange(n, dtype=torch.int32, device=device).repeat_interleave(p)[None])
    rows = texels.index_select(1, row_axes) * stride + plane_index * (stride * stride)  # [2, 3 planes, NP]
    index = rows[:, None] + texels.index_select(1, col_axes)[None]  # [2 row corners, 2 col corners, 3, NP]
    weight = (weights.index_select(1, row_axes) * (1.0 / NUM_PLANES))[:, None] * weights.index_select(1, col_axes)[None]
    out = F.embedding_bag(index.reshape(-1, n * p).t().contiguous(), table,
                          per_sample_weights=weight.reshape(-1, n * p).t().to(table.dtype).contiguous(), mode="sum")
    return out.reshape(n, p, -1)


def _sample_triplane_grid(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """`sample_triplane` by grid_sample: planes [N * 3, C, R, R], points [N, P, 3] -> [N, P, C]."""
    n, p, _ = points.shape
    coords = points * (2 / box_warp)  # the box maps to grid_sample's [-1, 1]
    columns = coords[..., _PLANE_COLUMN_AXES]  # [N, P, 3 planes]
    rows = coords[..., _PLANE_ROW_AXES]
    grid = torch.stack([columns, rows], dim=-1).permute(0, 2, 1, 3).reshape(n * NUM_PLANES, 1, p, 2)
    out = F.grid_sample(planes, grid.to(planes.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(n, NUM_PLANES, -1, p).mean(dim=1).transpose(1, 2)


class OSGDecoder(nn.Module):
    """Small MLP from mean tri-plane features to raw density and 32 features (the first 3 are RGB)."""

    def __init__(
        self,
        n_features: int,             # Input feature channels (per plane).
        options: dict,               # Official options dict: decoder_lr_mul, decoder_output_dim.
        hidden_dim: int = 64,        # Hidden width (fixed by the released checkpoints).
    ) -> None:
        super().__init__()
        self.n_features, self.hidden_dim = n_features, hidden_dim
        self.output_dim = int(options["decoder_output_dim"])
        lr_mul = options["decoder_lr_mul"]
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + self.output_dim, lr_multiplier=lr_mul),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, P, C] mean plane features -> (raw sigma [N, P, 1], features [N, P, output_dim] in (-0.001, 1.001))."""
        n, p, c = features.shape
        assert c == self.n_features, f"expected {self.n_features} features, got {c}"
        x = self.net(features.reshape(n * p, c)).reshape(n, p, -1)
        # sigmoid * 1.002 - 0.001 in a single pass (lets features reach 0 and 1 exactly).
        rgb = torch.add(x.new_tensor(-0.001), torch.sigmoid(x[..., 1:]), alpha=1 + 2 * 0.001)
        return x[..., :1], rgb

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, hidden_dim={self.hidden_dim}, output_dim={self.output_dim}"


def stratified_depths(jitter: torch.Tensor, settings: RenderSettings) -> torch.Tensor:
    """Coarse depths: evenly spaced from ray_start to ray_end, each pushed forward by jitter * spacing.

    Args:
        jitter: [..., D] uniforms in [0, 1).
    Returns:
        [..., D] depths (ascending along the last axis).
    """
    d = jitter.shape[-1]
    if settings.disparity_space_sampling:
        t = torch.linspace(0, 1, d, device=jitter.device) + jitter * (1.0 / (d - 1))
        return 1.0 / (1.0 / settings.ray_start * (1.0 - t) + 1.0 / settings.ray_end * t)
    start, end = settings.ray_start, settings.ray_end
    return torch.linspace(start, end, d, device=jitter.device) + jitter * ((end - start) / (d - 1))


def march_weights(sigma: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Compositing weight of each interval between consecutive samples (MipRayMarcher2).

    Density is softplus(mean raw sigma of the interval - 1); weights are alpha times transmittance.

    Args:
        sigma: [R, S] raw densities at depth-sorted samples.
        depths: [R, S] ascending depths.
    Returns:
        [R, S - 1] weights.
    """
    deltas = depths[:, 1:] - depths[:, :-1]
    density = F.softplus((sigma[:, :-1] + sigma[:, 1:]) / 2 - 1)
    alpha = 1 - torch.exp(-density * deltas)
    shifted = torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], dim=1)
    return alpha * torch.cumprod(shifted, dim=1)[:, :-1]


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, uniform: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Fine depths by inverse-CDF sampling of the smoothed coarse weights.

    Reproduces the official binning exactly: max-pool + avg-pool smoothing, +0.01, bins at the coarse
    interval midpoints, pdf from weights[1:-1] (so the last midpoint is never reached).

    Args:
        depths: [R, D] ascending coarse depths.
        weights: [R, D - 1] coarse compositing weights.
        uniform: [R, D_imp] uniforms in [0, 1).
    Returns:
        [R, D_imp] fine depths (unsorted, as drawn).
    """
    smooth = F.max_pool1d(weights.unsqueeze(1), 2, 1, padding=1)
    smooth = F.avg_pool1d(smooth, 2, 1).squeeze(1) + 0.01
    bins = 0.5 * (depths[:, :-1] + depths[:, 1:])
    pdf_weights = smooth[:, 1:-1] + eps
    pdf = pdf_weights / pdf_weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], dim=-1)
    inds = torch.searchsorted(cdf, uniform.contiguous(), right=True)
    below = (inds - 1).clamp_min(0)
    above = inds.clamp_max(pdf.shape[1])
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    bins_below, bins_above = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_above - cdf_below
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_below + (uniform - cdf_below) / denom * (bins_above - bins_below)


@dataclass(frozen=True)
class RayRender:
    """Composited rays: features, unclamped depth and the depth range of all samples."""

    features: torch.Tensor
    """[N, M, C] features mapped to [-1, 1] (first 3 channels are RGB)."""
    depth: torch.Tensor
    """[N, M] expected depth, NaN where a ray has zero total weight."""
    sample_min: torch.Tensor
    """Scalar: smallest sample depth of the render."""
    sample_max: torch.Tensor
    """Scalar: largest sample depth of the render."""


def render_rays(table: torch.Tensor, resolution: int, decoder: OSGDecoder, origins: torch.Tensor,
                directions: torch.Tensor, draws: SampleDraws, settings: RenderSettings) -> RayRender:
    """Render a set of rays: coarse pass, importance pass, then compositing of all samples.

    Args:
        table, resolution: tri-planes from `plane_table` and their side.
        decoder: the OSG decoder.
        origins, directions: [N, M, 3] rays.
        draws: the random draws for exactly these rays.
        settings: sample counts and ray bounds.
    Returns:
        `RayRender` for the M rays.
    """
    n, m, _ = origins.shape
    assert draws.jitter.shape[:2] == (n, m), f"draws {tuple(draws.jitter.shape)} do not match rays {(n, m)}"

    def decode(depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, M, S] depths -> raw sigma [N*M, S], features [N*M, S, C]."""
        s = depths.shape[-1]
        points = origins.unsqueeze(2) + depths.unsqueeze(-1) * directions.unsqueeze(2)
        sigma, feats = decoder(sample_triplane(table, resolution, points.reshape(n, m * s, 3), settings.box_warp))
        return sigma.reshape(n * m, s), feats.reshape(n * m, s, -1)

    coarse = stratified_depths(draws.jitter, settings)
    sigma_c, feats_c = decode(coarse)
    coarse = coarse.reshape(n * m, -1)
    if settings.depth_resolution_importance > 0:
        # Sample positions are not differentiated through (as in the official renderer).
        weights_c = march_weights(sigma_c, coarse).detach()
        fine = importance_depths(coarse, weights_c, draws.importance.reshape(n * m, -1))
        sigma_f, feats_f = decode(fine.reshape(n, m, -1))
        depths = torch.cat([coarse, fine], dim=1)
        sigma = torch.cat([sigma_c, sigma_f], dim=1)
    else:
        depths, sigma, feats_f = coarse, sigma_c, feats_c[:, :0]
    depths, order = depths.sort(dim=1)
    weights = march_weights(sigma.gather(1, order), depths)  # [R, S-1], depth-sorted intervals
    total = weights.sum(1)
    depth = (weights * (depths[:, :-1] + depths[:, 1:]) / 2).sum(1) / total
    # Interval k uses the mean colour of its two end samples, so each sample carries half of the weights of
    # the intervals on both sides; scattering those back to the unsorted order avoids gathering features.
    zero = weights[:, :1] * 0
    per_sample = (torch.cat([weights, zero], 1) + torch.cat([zero, weights], 1)) / 2
    per_sample = torch.zeros_like(per_sample).scatter_(1, order, per_sample)
    num_coarse = feats_c.shape[1]
    rgb = torch.einsum("rs,rsc->rc", per_sample[:, :num_coarse], feats_c)
    if feats_f.shape[1] > 0:
        rgb = rgb + torch.einsum("rs,rsc->rc", per_sample[:, num_coarse:], feats_f)
    if settings.white_back:
        rgb = rgb + 1 - total.unsqueeze(1)
    rgb = rgb * 2 - 1
    return RayRender(rgb.reshape(n, m, -1), depth.reshape(n, m), depths[:, 0].min(), depths[:, -1].max())


def render_chunked(planes: torch.Tensor, decoder: OSGDecoder, origins: torch.Tensor, directions: torch.Tensor,
                   draws: SampleDraws, settings: RenderSettings,
                   chunk_rays: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render all rays in chunks that bound memory; chunking never changes the result beyond float rounding.

    The `render` kernel choice goes one batch item at a time ('per_item': a single tri-plane, 25 MB at full
    size, stays hot in cache while it is gathered from; each pass takes `chunk_rays` rays of one item) or
    renders all items together ('whole_batch': few large launches for GPUs; each pass takes `chunk_rays` rays
    in all, split evenly over the items), so a pass holds the same number of samples either way.

    Args:
        planes: [N, 3, C, H, W] tri-planes.
        decoder: the OSG decoder.
        origins, directions: [N, M, 3] rays.
        draws: random draws for all M rays.
        settings: sample counts and ray bounds.
        chunk_rays: rays per pass; None derives it from `DEFAULT_CHUNK_SAMPLES`.
    Returns:
        features [N, M, C] in [-1, 1] and depth [N, M], clamped like the official renderer to the range of
        all sample depths of the render (the whole batch).
    """
    n, num_planes, channels, height, width = planes.shape
    assert num_planes == NUM_PLANES and channels == decoder.n_features and height == width, \
        f"expected square planes [N, 3, {decoder.n_features}, R, R], got {tuple(planes.shape)}"
    m = origins.shape[1]
    if chunk_rays is None:
        chunk_rays = DEFAULT_CHUNK_SAMPLES // max(settings.depth_resolution, settings.depth_resolution_importance, 1)
    step = max(1, int(chunk_rays))
    if kernels_for(planes.device).render == "whole_batch":
        groups = [slice(0, n)]
        step = max(1, step // n)  # the same number of samples per pass as one item's chunk
    else:
        groups = [slice(item, item + 1) for item in range(n)]
    features, depth, low, high = [], [], [], []
    for items in groups:
        table = prepare_planes(planes[items])
        parts = [
            render_rays(table, height, decoder, origins[items, i:i + step], directions[items, i:i + step],
                        SampleDraws(draws.jitter[items, i:i + step], draws.importance[items, i:i + step]), settings)
            for i in range(0, m, step)
        ]
        features.append(torch.cat([part.features for part in parts], dim=1))
        depth.append(torch.cat([part.depth for part in parts], dim=1))
        low.extend(part.sample_min for part in parts)
        high.extend(part.sample_max for part in parts)
    depth = torch.clamp(torch.nan_to_num(torch.cat(depth), math.inf), torch.stack(low).min(), torch.stack(high).max())
    return torch.cat(features), depth
