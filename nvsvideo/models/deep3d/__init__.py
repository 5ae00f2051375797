"""Deep3DFaceRecon_pytorch's reconstruction network (ResNet-50 -> 257 coefficients) and its safe loader.

nvsvideo uses only its head-pose outputs (angles and translation), which the official in-the-wild
preprocessing of EG3D and TriPlaneNet turns into camera labels (`nvsvideo.face.deep3d`).
"""

from nvsvideo.models.deep3d.checkpoint import layout_problems, load_recon_net
from nvsvideo.models.deep3d.network import COEFF_SLICES, INPUT_SIZE, ReconNet

__all__ = ["COEFF_SLICES", "INPUT_SIZE", "ReconNet", "layout_problems", "load_recon_net"]
