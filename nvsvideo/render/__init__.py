"""Rendering stage: tri-planes + latent codes + cameras -> images, with reproducible per-frame sampling."""

from nvsvideo.render.views import RenderOptions, frame_generators, render_views

__all__ = ["RenderOptions", "frame_generators", "render_views"]
