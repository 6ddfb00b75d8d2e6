"""The spool: where every received instance is written before success is returned.

Layout under ``spool_dir``::

    tmp/                      partial writes (never read by anyone)
    instances/<sop uid>.dcm   stored instances, one file per SOP Instance UID
    rejected/<stamp>-<id>.dcm data sets refused with a failure status (kept, not analysed)
    conflicts/<sop uid>-<sha256 prefix>.dcm
                              a second copy of a stored instance that is not the same data set
                              (kept, not analysed; made when first needed)

A write is atomic and durable: the bytes go to ``tmp/``, are fsynced, then
hard-linked into place (``link`` fails if the target exists, so two
associations racing with the same SOP Instance UID store it once) and the
directory is fsynced.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from node.exceptions import SpoolFullError

logger = logging.getLogger(__name__)

# PS3.5 9.1: UIDs are digits and dots, at most 64 characters.
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# errno values that mean "no room": map to 0xA700 Out of Resources.
NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_valid_uid(uid: str) -> bool:
    return 0 < len(uid) <= 64 and bool(_UID_RE.match(uid))


class Spool:
    """Atomic, de-duplicating storage of received instances."""

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.tmp_dir = self.root / "tmp"
        self.instances_dir = self.root / "instances"
        self.rejected_dir = self.root / "rejected"
        self.conflicts_dir = self.root / "conflicts"

    def ensure(self) -> None:
        for d in (self.tmp_dir, self.instances_dir, self.rejected_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path_for(self, sop_instance_uid: str) -> Path:
        if not is_valid_uid(sop_instance_uid):
            raise ValueError(f"SOP Instance UID {sop_instance_uid!r} is not a valid UID")
        return self.instances_dir / f"{sop_instance_uid}.dcm"

    def contains(self, sop_instance_uid: str) -> bool:
        return self.path_for(sop_instance_uid).exists()

    def check_space(self, needed: int = 0) -> None:
        """Raise SpoolFullError if writing ``needed`` bytes would go below the reserve."""
        free = shutil.disk_usage(self.root).free
        if free - needed < self.min_free_bytes:
            raise SpoolFullError(f"spool {self.root} has {free} bytes free, reserve is {self.min_free_bytes}")

    def store(self, sop_instance_uid: str, data: bytes) -> tuple[Path, bool]:
        """Write ``data`` as the instance's file. Returns (path, created).

        ``created`` is False when the instance was already there (a duplicate);
        the existing file is kept as it is.

        Raises
        ------
        SpoolFullError
            No room (below the reserve, or the disk said ENOSPC/EDQUOT).
        """
        final = self.path_for(sop_instance_uid)
        if final.exists():
            return final, False
        self.check_space(len(data))
        tmp = self._write_tmp(data)
        try:
            os.link(tmp, final)
            created = True
        except FileExistsError:
            created = False
        finally:
            tmp.unlink(missing_ok=True)
        if created:
            _fsync_dir(self.instances_dir)
        return final, created

    def keep_other_copy(self, sop_instance_uid: str, data: bytes) -> Path:
        """A second copy of a stored instance that is not the same data set (a resend corrected
        at the modality, or re-encoded on the way): kept beside it as
        ``conflicts/<UID>-<sha256 prefix>.dcm``, once per content, so nothing received is lost."""
        with self._full_is_spool_full():
            self.conflicts_dir.mkdir(parents=True, exist_ok=True)  # made when first needed
        target = self.conflicts_dir / f"{sop_instance_uid}-{hashlib.sha256(data).hexdigest()[:16]}.dcm"
        if not target.exists():
            self._place(data, target)
        return target

    def quarantine(self, data: bytes, hint: str = "") -> Path | None:
        """Keep a refused data set (so nothing received is lost). Best effort."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        ident = hint if is_valid_uid(hint) else hashlib.sha256(data).hexdigest()[:16]
        target = self.rejected_dir / f"{stamp}-{ident}.dcm"
        try:
            self._place(data, target)
            return target
        except (OSError, SpoolFullError):
            logger.warning("could not keep refused data set %s in %s", ident, self.rejected_dir)
            return None

    def _place(self, data: bytes, target: Path) -> None:
        """Write ``data`` as ``target`` durably (room checked, through ``tmp/``, replaced into
        place, its folder fsynced); overwrites."""
        self.check_space(len(data))
        tmp = self._write_tmp(data)
        os.replace(tmp, target)
        _fsync_dir(target.parent)

    @contextmanager
    def _full_is_spool_full(self) -> Iterator[None]:
        """An OSError of a full disk (ENOSPC/EDQUOT) raised as SpoolFullError; others as they are."""
        try:
            yield
        except OSError as exc:
            if exc.errno in NO_SPACE_ERRNOS:
                raise SpoolFullError(f"spool {self.root}: {os.strerror(exc.errno)}") from exc
            raise

    def _write_tmp(self, data: bytes) -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=".part")
        with self._full_is_spool_full():
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError:
                Path(name).unlink(missing_ok=True)
                raise
        return Path(name)

    def stored_uids(self) -> list[str]:
        """SOP Instance UIDs of every stored instance (for the start-up sweep)."""
        return sorted(p.stem for p in self.instances_dir.glob("*.dcm"))

    def clean_tmp(self) -> int:
        """Remove partial writes left by a crash; they were never acknowledged."""
        removed = 0
        for part in self.tmp_dir.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
