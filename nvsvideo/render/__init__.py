"""Rendering stage: tri-planes + latent codes + cameras -> images, with reproducible per-frame sampling."""

from nvsvideo.models.eg3d.draws import DRAW_SCHEME, DrawKeys, RenderId
from nvsvideo.render.views import RenderOptions, render_views

__all__ = ["DRAW_SCHEME", "DrawKeys", "RenderId", "RenderOptions", "render_views"]
