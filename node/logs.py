"""Logging set-up for entry points only (library modules just call getLogger).

Log lines carry UIDs and AE titles, never patient data; pynetdicom's own
identifier logging (which dumps whole data sets at DEBUG) is kept at WARNING.
"""

from __future__ import annotations

import logging
import sys
import warnings


def configure_logging(level: str = "INFO") -> None:
    """Send the node's logs to stderr in one line per record."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # pynetdicom logs PDUs and, at DEBUG, whole data sets (patient names included).
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom warns about invalid values by quoting them (a malformed birth date
    # would be printed): a tolerant receiver does not validate values on read.
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    # highdicom quotes person names it finds odd ("The string 'X' is unlikely to
    # represent ..."): a patient's name must not reach stderr that way.
    warnings.filterwarnings("ignore", message=r"The string .* person name", category=UserWarning)
    # highdicom narrates every module it copies at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
