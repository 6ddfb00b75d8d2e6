"""Errors of the workers. Only TemporaryError makes a task retry."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class."""


class TemporaryError(WorkerError):
    """Worth another try later (database locked, spool on a remounting disk, ...)."""


class PermanentError(WorkerError):
    """Retrying will not help (unreadable pixels, ineligible image): fail and audit."""
