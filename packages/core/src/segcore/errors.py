"""Exceptions raised for user mistakes: each message says what is wrong and how to fix it."""

from __future__ import annotations

__all__ = [
    "SegcoreError",
    "UnknownComponentError",
    "OptionsError",
    "ComponentClashError",
    "WiringError",
    "CheckpointError",
    "ImageReadError",
    "ClassMismatchError",
    "ClassNamesError",
    "EvaluationError",
    "HubNetworkError",
    "NotCachedError",
    "TrainingError",
    "TrainingInterrupted",
    "StorageError",
    "OutputFolderError",
]


class SegcoreError(Exception):
    """Base class of every error segcore raises for bad input; the CLI prints it as one line."""


class UnknownComponentError(SegcoreError, KeyError):
    """A component name that no installed plugin registers."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class OptionsError(SegcoreError, TypeError):
    """An option key a component does not have, or a value of the wrong kind."""


class ComponentClashError(SegcoreError):
    """Two plugins register the same name."""


class WiringError(SegcoreError):
    """An encoder and a decoder that cannot be connected, explained in words."""


class CheckpointError(SegcoreError):
    """A checkpoint that is missing, corrupt or does not match the model."""


class ImageReadError(SegcoreError, ValueError):
    """An image file that is missing, unreadable or truncated; the message names the file."""


class ClassMismatchError(SegcoreError, ValueError):
    """A model whose classes cannot be used with a dataset's (different counts); the message says what to do."""


class ClassNamesError(SegcoreError, ValueError):
    """Class names that are empty, repeated or hold control characters; the message names the source and the entry."""


class EvaluationError(SegcoreError):
    """An evaluation that would score nothing (no samples, no labelled pixel): its metrics would be nan."""


class HubNetworkError(CheckpointError):
    """The Hub (or an official download URL) could not be reached: a network failure, not a missing model."""


class NotCachedError(CheckpointError):
    """Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) and the model is not in the local cache."""


class StorageError(SegcoreError, OSError):
    """A file that could not be written (disk full, file-size limit, permission); the message names it and why.

    An :class:`OSError` too, so that code catching write failures catches it.
    """


class OutputFolderError(SegcoreError, ValueError):
    """An output folder where writing would replace files segcore did not write, or mix outputs with inputs."""


class TrainingError(SegcoreError):
    """Training stopped (non-finite loss, bad settings, no usable checkpoint)."""


class TrainingInterrupted(TrainingError):
    """SIGTERM stopped the run after it saved a checkpoint; the message says where.

    ``exit_code`` is what the shell reports for a process killed by SIGTERM (128 + 15): a job scheduler sees the
    run as stopped, not finished.
    """

    exit_code = 143
