"""Errors raised by the models package; each message names the file or input."""

from __future__ import annotations

from pathlib import Path


class ModelsError(Exception):
    """Base class of every error raised by :mod:`models`."""


class ImageError(ModelsError):
    """An input image could not be read or decoded."""


class WeightsError(ModelsError):
    """A weights file is missing or unusable."""


class WeightsMissingError(WeightsError):
    """The weights file named in the registry does not exist."""

    def __init__(self, path: Path | str, model: str) -> None:
        self.path = Path(path)
        self.model = model
        super().__init__(f"weights file for model {model!r} not found: {self.path}")


class WeightsChecksumError(WeightsError):
    """The weights file's SHA-256 differs from the one recorded in the registry."""

    def __init__(self, path: Path | str, expected: str, actual: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"weights file {self.path} is corrupted or not the registered one: "
            f"expected SHA-256 {expected}, actual {actual}"
        )


class RegistryError(ModelsError):
    """The registry has no entry for a model, or the entry is malformed."""
