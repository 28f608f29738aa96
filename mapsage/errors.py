"""Errors a user can fix. Each message names the file or config key concerned and says what to do."""
from __future__ import annotations


class UserError(Exception):
    """Base class: printed as one line by the command line and shown as such in the app."""


class DataError(UserError):
    """A dataset problem: unreadable image, size mismatch, missing mask, unknown mask colours, ..."""


class CheckpointError(UserError):
    """A missing or unusable checkpoint / weights file."""


class TrainingError(UserError):
    """A run that cannot go on (NaN loss, ...); the last good checkpoint is kept."""


class DiskFullError(UserError):
    """No space left where a run writes (checkpoints, events, predictions)."""
