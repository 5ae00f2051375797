"""Quality measures of an inversion and of a rendered video: PSNR, SSIM, LPIPS, identity, temporal stability."""

from nvsvideo.metrics.image import psnr, ssim
from nvsvideo.metrics.stability import frame_change, stability_summary

__all__ = ["frame_change", "psnr", "ssim", "stability_summary"]
