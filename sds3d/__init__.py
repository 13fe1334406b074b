"""sds3d: text to 3D by score distillation. ``sds3d.api.generate`` is the entry point."""

__version__ = "0.1.0"
