"""One exception family: the CLI prints these as a message and a hint, without a traceback."""


class Sds3dError(Exception):
    """Base of every error sds3d raises on purpose. ``hint`` says what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ConfigError(Sds3dError):
    """A config key, value, file or prompt is wrong; raised before any model loads."""


class ModelLoadError(Sds3dError):
    """A diffusion model could not be loaded (not found locally, hub unreachable, bad folder)."""


class ExportError(Sds3dError):
    """A mesh could not be extracted or written."""


class NonFiniteError(Sds3dError):
    """The loss or a gradient became NaN/inf; the run stops and keeps its last good checkpoint."""


class CheckpointError(Sds3dError):
    """A checkpoint is missing, damaged, or does not belong to the run's config."""
