"""The error types digitnet raises for problems a user can cause.

Every error that bad input, a bad flag or a broken file can provoke is a subclass of
:class:`DigitnetError`. The command line catches exactly this base class and turns it into one
line on stderr and exit code 2 (``DivergenceError``: exit code 3), never a traceback.
Anything else that escapes is a bug in digitnet.
"""

from __future__ import annotations


class DigitnetError(Exception):
    """Base class of every error a user can cause. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class DataError(DigitnetError):
    """A data file is missing, malformed, truncated or fails its checksum."""


class DownloadError(DataError):
    """A dataset could not be downloaded from any mirror (no network, bad checksum, ...)."""


class ModelFileError(DigitnetError):
    """A model or checkpoint file is missing, malformed or has been tampered with."""


class ConfigError(DigitnetError):
    """An invalid architecture, preset, hyperparameter or flag value."""


class ImageError(DataError):
    """A user image cannot be read or contains no digit."""


class DivergenceError(DigitnetError):
    """Training produced a NaN or infinite loss or gradient."""

    exit_code = 3


class TrainingInterrupted(DigitnetError):
    """Training was stopped by Ctrl-C or SIGTERM after a checkpoint was written."""

    exit_code = 130
