"""Errors raised while building the DICOM outputs."""

from __future__ import annotations


class DicomOutputError(Exception):
    """Base class: an output could not be built from this source and result."""


class UIDError(DicomOutputError, ValueError):
    """A UID could not be derived (missing or empty input)."""


class SourceDatasetError(DicomOutputError, ValueError):
    """The source dataset lacks an attribute the outputs need; the message names it."""


class ResultMismatchError(DicomOutputError, ValueError):
    """The analysis result does not fit the source (e.g. array shape vs Rows/Columns)."""
