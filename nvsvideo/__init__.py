"""nvsvideo: re-render and edit portrait videos from new viewpoints with EG3D + TriPlaneNet."""

__version__ = "0.1.0"
