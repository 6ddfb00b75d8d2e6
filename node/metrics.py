"""Prometheus ``/metrics`` and a ``/health`` endpoint, and the numbers behind ``cxr-node status``.

Workers are separate processes, often on other hosts, so per-process
counters would each see a part. Everything global is read from the
database at scrape time instead (a custom collector): counters from the
append-only audit table, queue depth and outbox from their tables, stage
durations as histograms of the audit rows' ``duration_ms``. Model versions
come from the model registry (plain JSON; torch is not imported here).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import bindparam, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from node.db.engine import schema_state, session_scope
from node.db.tables import AuditEvent, Instance, InstanceState, OutboxItem
from node.settings import Settings, get_settings

logger = logging.getLogger(__name__)

# Counter name -> (audit kind, outcome or None for any, help).
COUNTERS: dict[str, tuple[str, str | None, str]] = {
    "instances_received": ("instance.received", None, "Instances stored from a C-STORE"),
    "instances_rejected": ("instance.rejected", None, "C-STOREs refused (0xC210, 0xA700, ...)"),
    "instances_ineligible": ("instance.ineligible", None, "Instances stored but not analysed"),
    "jobs_queued": ("job.queued", "success", "Analysis tasks sent to the broker"),
    "instances_analysed": ("job.succeeded", None, "Analyses that produced outputs"),
    "jobs_failed": ("job.failed", None, "Analyses that failed for good"),
    "studies_urgent": ("triage.urgent", None, "Analyses the triage rule marked urgent"),
    "exports_sent": ("export.sent", None, "Outputs delivered to a destination"),
    "exports_dead": ("export.dead", None, "Outputs given up on after every attempt"),
}
# Stage -> the audit kind whose duration_ms times it.
STAGES: dict[str, str] = {
    "ingest": "instance.received",
    "analysis": "job.succeeded",
    "export": "export.sent",
}
BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class Stage:
    count: int
    sum_seconds: float
    buckets: list[int]  # cumulative counts for BUCKETS_SECONDS

    @property
    def mean_seconds(self) -> float:
        return self.sum_seconds / self.count if self.count else 0.0


@dataclass
class Snapshot:
    """The node's numbers, read from the database in one go."""

    database_ok: bool
    error: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)  # audit kind -> newest, epoch seconds

    @property
    def queue_depth(self) -> int:
        return sum(self.instances.get(state, 0) for state in WAITING)


# Waiting for analysis: queued, or stored and not yet queued. A broker that cannot be reached
# leaves instances "received" (the sweep queues them once it answers); counted as queued only,
# the depth stayed 0 through a broker outage and no alert on it could fire.
WAITING = (InstanceState.RECEIVED, InstanceState.QUEUED)


def _db_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def model_versions() -> dict[str, dict[str, str]]:
    """``{role: {"name", "version"}}`` from the registry; empty if it cannot be read."""
    from models.exceptions import RegistryError
    from models.registry import load_registry  # plain JSON reader, no torch

    try:
        entries = load_registry()["models"]
    except (RegistryError, KeyError):
        return {}
    return {role: {"name": str(e["name"]), "version": str(e["version"])} for role, e in entries.items()}


def snapshot() -> Snapshot:
    """Counters, states, stage durations and models; ``database_ok`` False if the DB failed."""
    snap = Snapshot(database_ok=True, models=model_versions())
    try:
        with session_scope() as session:
            counts = {
                (kind, outcome): n
                for kind, outcome, n in session.execute(
                    select(AuditEvent.kind, AuditEvent.outcome, func.count()).group_by(
                        AuditEvent.kind, AuditEvent.outcome
                    )
                )
            }
            snap.instances = dict(
                session.execute(select(Instance.state, func.count()).group_by(Instance.state)).all()  # type: ignore[arg-type]
            )
            snap.outbox = dict(
                session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)).all()  # type: ignore[arg-type]
            )
            snap.stages = _stages(session)
            snap.last_seen = _last_seen(session)
    except SQLAlchemyError as exc:
        return Snapshot(database_ok=False, error=_db_error(exc), models=snap.models)
    for name, (kind, outcome, _) in COUNTERS.items():
        snap.counters[name] = sum(n for (k, o), n in counts.items() if k == kind and outcome in (None, o))
    return snap


# Gauge name -> (audit kinds, help): when the newest such event was written.
LAST_SEEN: dict[str, tuple[tuple[str, ...], str]] = {
    "last_received_timestamp_seconds": (("instance.received",), "When the last instance was stored"),
    "last_job_finished_timestamp_seconds": (
        ("job.succeeded", "job.failed"),
        "When a worker last finished an analysis (succeeded or failed)",
    ),
}


def _last_seen(session: Any) -> dict[str, float]:
    """Newest event time of each LAST_SEEN kind.

    One max() per kind, not one grouped query: each is then a single step down the
    (kind, created_at) index (0005), where a GROUP BY reads every row of the kinds
    (0.3 s at a million rows on PostgreSQL, benchmarks/bench_audit.py).
    """
    newest = {}
    for kind in sorted({k for ks, _ in LAST_SEEN.values() for k in ks}):
        # The kind inlined (our own constant): a plan for this value, not a generic one that
        # walks the whole created_at index when the kind has no rows (PostgreSQL).
        same_kind = AuditEvent.kind == bindparam("kind", kind, literal_execute=True)
        stamp = session.scalar(select(func.max(AuditEvent.created_at)).where(same_kind))
        if stamp is not None:
            # SQLite hands back text from an aggregate; parse it through the column type.
            value = stamp if not isinstance(stamp, str) else datetime.fromisoformat(stamp)
            newest[kind] = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return newest


def _stages(session: Any) -> dict[str, Stage]:
    """Histogram buckets computed in SQL: one pass over the timed audit rows."""
    ms = AuditEvent.duration_ms
    columns = [func.count(), func.coalesce(func.sum(ms), 0.0)]
    columns += [func.sum(case((ms <= le * 1000, 1), else_=0)) for le in BUCKETS_SECONDS]
    rows = session.execute(
        select(AuditEvent.kind, *columns)
        .where(AuditEvent.kind.in_(STAGES.values()), ms.is_not(None))
        .group_by(AuditEvent.kind)
    ).all()
    by_kind = {row[0]: row[1:] for row in rows}
    stages = {}
    for stage, kind in STAGES.items():
        count, total_ms, *buckets = by_kind.get(kind, (0, 0.0, *[0] * len(BUCKETS_SECONDS)))
        stages[stage] = Stage(int(count), float(total_ms) / 1000, [int(b or 0) for b in buckets])
    return stages


class NodeCollector:
    """A prometheus-client collector that reads the database at each scrape.

    ``worker_up`` tells whether the node's embedded worker runs (None: no embedded worker).
    """

    def __init__(self, settings: Settings | None = None, worker_up: Callable[[], bool] | None = None):
        self.settings = settings
        self.worker_up = worker_up

    def collect(self) -> Iterator[Metric]:
        snap = snapshot()
        yield GaugeMetricFamily(
            "cxr_node_database_up", "1 if the audit database answered", value=int(snap.database_ok)
        )
        yield from self._host()
        models = InfoMetricFamily("cxr_node_model", "Model of each role in the registry", labels=["role"])
        for role, info in sorted(snap.models.items()):
            models.add_metric([role], info)
        yield models
        if not snap.database_ok:
            return
        for name, (_, _, help_text) in COUNTERS.items():
            yield CounterMetricFamily(f"cxr_node_{name}", help_text, value=snap.counters[name])
        yield GaugeMetricFamily(
            "cxr_node_queue_depth",
            "Instances waiting for analysis (stored or queued), not yet started",
            value=snap.queue_depth,
        )
        states = GaugeMetricFamily("cxr_node_instances", "Received instances by state", labels=["state"])
        for state, n in sorted(snap.instances.items()):
            states.add_metric([state], n)
        yield states
        outbox = GaugeMetricFamily("cxr_node_outbox", "Export outbox rows by state", labels=["state"])
        for state, n in sorted(snap.outbox.items()):
            outbox.add_metric([state], n)
        yield outbox
        durations = HistogramMetricFamily(
            "cxr_node_stage_duration_seconds", "Duration of each stage", labels=["stage"]
        )
        for stage, s in snap.stages.items():
            buckets = [(str(le), n) for le, n in zip(BUCKETS_SECONDS, s.buckets, strict=True)]
            durations.add_metric([stage], [*buckets, ("+Inf", s.count)], sum_value=s.sum_seconds)
        yield durations
        for name, (kinds, help_text) in LAST_SEEN.items():
            stamps = [snap.last_seen[k] for k in kinds if k in snap.last_seen]
            if stamps:  # absent until the first such event (an alert rule sees it as absent)
                yield GaugeMetricFamily(f"cxr_node_{name}", help_text, value=max(stamps))

    def _host(self) -> Iterator[Metric]:
        """What is known without the database: spool disk space, the embedded worker."""
        if self.settings is not None:
            try:
                free = shutil.disk_usage(self.settings.spool_path).free
            except OSError:
                free = None
            if free is not None:
                yield GaugeMetricFamily(
                    "cxr_node_spool_free_bytes", "Free bytes on the spool's file system", value=free
                )
            yield GaugeMetricFamily(
                "cxr_node_spool_min_free_bytes",
                "The free-space floor (CXR_NODE_MIN_FREE_BYTES): below it C-STOREs get 0xA700",
                value=self.settings.min_free_bytes,
            )
        if self.worker_up is not None:
            yield GaugeMetricFamily(
                "cxr_node_embedded_worker_up",
                "1 if the node's embedded worker process runs",
                value=int(self.worker_up()),
            )


def health(
    settings: Settings, workers: Callable[[], dict[str, Any] | None] | None = None
) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body: 200 when the database answers at this version's schema,
    503 otherwise (``database`` says why; ``schema`` gives both revisions on a mismatch).

    With ``workers`` (the embedded worker's readiness), the body also says how
    many worker processes hold their models and ``ready`` whether all do.
    """
    status, body = _database_health(settings)
    found = workers() if workers is not None else None
    if found is not None:
        body["workers"] = {"expected": found["expected"], "ready": found["ready"]}
    body["ready"] = status == 200 and (found is None or bool(found["all_ready"]))
    return status, body


def _database_health(settings: Settings) -> tuple[int, dict[str, Any]]:
    try:
        schema = schema_state()
        if not schema.is_current:  # behind: never migrated or downgraded; ahead: a newer node migrated it
            return 503, {
                "status": "unavailable",
                "database": schema.problem,
                "schema": schema.as_json(),
                "ae_title": settings.ae_title,
            }
        with session_scope() as session:
            queued = session.scalar(
                select(func.count()).select_from(Instance).where(Instance.state.in_(WAITING))
            )
    except SQLAlchemyError as exc:
        return 503, {"status": "unavailable", "database": _db_error(exc), "ae_title": settings.ae_title}
    return 200, {"status": "ok", "database": "ok", "ae_title": settings.ae_title, "queue_depth": queued}


def make_registry(
    settings: Settings | None = None, worker_up: Callable[[], bool] | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(settings, worker_up))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """``GET /metrics`` (Prometheus text format) and ``GET /health`` (JSON) on a loopback port."""

    def __init__(
        self,
        settings: Settings | None = None,
        workers: Callable[[], dict[str, Any] | None] | None = None,
        worker_up: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.workers = workers
        self.registry = make_registry(self.settings, worker_up)
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> tuple[str, int]:
        registry, settings, workers = self.registry, self.settings, self.workers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path in ("/health", "/healthz"):
                    status, body = health(settings, workers)
                    self._reply(status, "application/json", json.dumps(body).encode())
                elif path == "/ready":  # 503 until every worker process holds its models
                    status, body = health(settings, workers)
                    status = 200 if body["ready"] else 503
                    self._reply(status, "application/json", json.dumps(body).encode())
                else:
                    self._reply(404, "text/plain", b"try /metrics or /health\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("metrics: " + format, *args)

        self.server = ThreadingHTTPServer((settings.metrics_host, settings.metrics_port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True).start()
        host, port = self.server.server_address[:2]
        logger.info("metrics on http://%s:%s/metrics", host, port)
        return str(host), int(port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
