"""The SQL audit log: append-only events plus the state of received instances."""

from node.audit.log import EventKind, Outcome, record, tail

__all__ = ["EventKind", "Outcome", "record", "tail"]
