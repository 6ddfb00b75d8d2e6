"""Errors raised by the node. The network boundary (node.scp) maps them to DICOM statuses."""

from __future__ import annotations


class NodeError(Exception):
    """Base class of the node's own errors."""


class ConfigurationError(NodeError):
    """Settings that cannot work (bad AE title, unreachable database, ...)."""


class SpoolFullError(NodeError):
    """The spool has less free space than ``min_free_bytes`` or the disk is full (0xA700)."""


class InvalidInstanceError(NodeError):
    """A received data set that cannot be understood (0xC210): names the attribute."""


class DatasetMismatchError(InvalidInstanceError):
    """A received data set that does not match its SOP Class (0xA900, PS3.4 B.2.3): another SOP
    Class UID than the request's, or an image without Pixel Data (an SR, a PDF or a presentation
    state sent as a radiograph)."""


class DatabaseUnavailableError(NodeError):
    """A received instance could not be recorded in the audit database (0xA700: the
    modality keeps it and retries; nothing is acknowledged that the node cannot account for)."""


class QueueError(NodeError):
    """The broker refused or could not be reached; the instance stays in the spool."""


class SendError(NodeError):
    """A C-STORE as SCU failed: association refused, aborted, or a failure status."""
