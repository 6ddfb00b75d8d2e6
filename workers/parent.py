"""An embedded worker dies with the node that started it.

``cxr-node serve`` runs ``cxr-node worker --parent-pid PID`` as a child. If
the node is killed outright (SIGKILL, OOM killer) nothing stops that child,
and an orphan worker would go on taking jobs from the queue of the next node.
So the child asks Linux for a parent-death signal (``PR_SET_PDEATHSIG``
through celery's ``set_pdeathsig``, prctl(2)) and, as a fallback for other
systems and for the race before prctl, polls its parent pid. Either way it
gets SIGTERM: Celery's warm shutdown stops consuming at once and lets a task
under way finish (tasks are idempotent). Celery's prefork pool children
already die with the worker (``set_pdeathsig('SIGKILL')`` in celery).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from celery.platforms import set_pdeathsig

logger = logging.getLogger(__name__)


def die_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Make this process receive SIGTERM once ``parent_pid`` is no longer its parent.

    Raises SystemExit if the parent is already gone.
    """
    set_pdeathsig("SIGTERM")  # ignored where the OS has no prctl
    if os.getppid() != parent_pid:  # died before prctl took effect
        raise SystemExit(f"parent process {parent_pid} is gone; not starting an orphan worker")

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        logger.warning("parent process %d is gone: shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
