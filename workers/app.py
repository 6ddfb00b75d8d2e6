"""The Celery application, configured from the node's settings.

Production: a Redis broker (``CXR_NODE_BROKER_URL``) shared by many worker
processes on GPU or CPU hosts. Single machine: no broker configured, and
kombu's filesystem transport under ``<home>/broker`` carries the same tasks.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from node.settings import Settings, get_settings
from workers.contract import ANALYZE_TASK
from workers.embedded_broker import TRANSPORT as EMBEDDED_TRANSPORT
from workers.readiness import PROC_ALIVE_TIMEOUT

EMBEDDED_POLLING_INTERVAL = 0.02  # seconds


def broker_options(settings: Settings) -> dict[str, Any]:
    """Transport options; for the embedded filesystem broker, its folders."""
    if not settings.broker.startswith("filesystem://"):
        return {}
    root = settings.embedded_broker_dir
    queue_dir = root / "queue"
    for folder in (queue_dir, root / "processed", root / "control"):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "store_processed": False,
        # kombu polls the folder once a second by default: up to a second of
        # latency per study. Every 0.02 s: 10 ms waited on average, for about
        # 1 % of a core while idle (measured; 0.1 s: 0.2 %).
        "polling_interval": EMBEDDED_POLLING_INTERVAL,
    }


def is_embedded_broker(settings: Settings) -> bool:
    return settings.broker.startswith("filesystem://")


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("cxr_node", broker=settings.broker, include=["workers.tasks"])
    if is_embedded_broker(settings):  # messages renamed into place whole (workers.embedded_broker)
        app.conf.broker_transport = EMBEDDED_TRANSPORT
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=settings.result_backend,
        # Redelivered when a worker dies mid-task; tasks are idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A prefork child loads and runs its models before it announces itself
        # (workers.readiness); Celery would kill one silent for 4 s.
        worker_proc_alive_timeout=PROC_ALIVE_TIMEOUT,
        task_soft_time_limit=540,
        task_time_limit=600,
        task_routes={ANALYZE_TASK: {"queue": settings.model_queue}},
        task_default_queue=settings.model_queue,
        worker_hijack_root_logger=False,
        # The filesystem transport has no broadcast: no remote control there.
        worker_enable_remote_control=not is_embedded_broker(settings),
        worker_send_task_events=False,
    )
    return app


_lock = threading.Lock()
_apps: dict[tuple[str, str, str], Celery] = {}


def get_app() -> Celery:
    """The Celery app for the current settings (built on first use, once per broker)."""
    settings = get_settings()
    key = (settings.broker, settings.model_queue, str(settings.embedded_broker_dir))
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = create_app(settings)
        return app
