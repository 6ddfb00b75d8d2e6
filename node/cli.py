"""``cxr-node``: the one entry point (see docs/architecture.md, "Contracts")."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from models.training.cli import eval_app, train_app
from node.logs import configure_logging
from node.settings import Destination, Settings, configure

if TYPE_CHECKING:
    from workers.pipeline import Analysis

app = typer.Typer(
    name="cxr-node",
    help="Clinical AI node for chest X-rays.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="The audit database.", no_args_is_help=True)
audit_app = typer.Typer(help="Read the audit log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
export_app = typer.Typer(help="The export outbox.", no_args_is_help=True)
app.add_typer(export_app, name="export")

logger = logging.getLogger("node.cli")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"cxr-node: {message}", err=True)
    raise typer.Exit(code)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (drivers write several)."""
    return " ".join(str(exc).split())


def _settings_or_exit(**overrides: object) -> Settings:
    """The settings with CLI ``overrides`` applied; a clear message if they are invalid."""
    import tomllib

    from pydantic import ValidationError

    try:
        return configure(**overrides)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid settings: {errors}")
    except tomllib.TOMLDecodeError as exc:
        source = overrides.get("config") or os.environ.get("CXR_NODE_CONFIG")
        _fail(f"settings file {source} is not valid TOML: {exc}")
    except OSError as exc:  # the TOML file exists but cannot be read
        _fail(f"cannot read settings file {exc.filename}: {exc.strerror}")


class OutboxStateName(StrEnum):
    """The states of an outbox row (``node.db.tables.OutboxState``), for ``--state``."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"


@contextmanager
def _database(what: str, upgrade_hint: bool = True) -> Iterator[None]:
    """Turn a database failure inside the block into one line and exit 1: the database
    cannot be reached, or using ``what`` failed (with ``upgrade_hint``, most often because
    the database was never migrated)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from node.settings import get_settings

    try:
        yield
    except ImportError as exc:  # a URL naming a driver that is not installed (psycopg2, mysql)
        url = make_url(get_settings().db_url).render_as_string(hide_password=True)
        _fail(f"cannot use the database {url}: its driver is not installed ({exc.name or exc})", code=1)
    except SQLAlchemyError as exc:
        url = make_url(get_settings().db_url).render_as_string(hide_password=True)
        why = _one_line(exc.orig or exc) if isinstance(exc, DBAPIError) else _one_line(exc)
        if isinstance(exc, DBAPIError) and exc.statement is None:  # raised while connecting
            _fail(f"cannot connect to the database {url}: {why}", code=1)
        if not upgrade_hint:
            _fail(f"cannot use {what} in {url}: {why}", code=1)
        _fail(f"cannot read {what} ({why}); run 'cxr-node db upgrade' first", code=1)


@app.callback()
def main(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file", envvar="CXR_NODE_CONFIG")
    ] = None,
    home: Annotated[Path | None, typer.Option(help="Data folder (spool, SQLite, broker)")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the audit DB")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING")] = None,
) -> None:
    """Global options; every setting can also come from CXR_NODE_* variables."""
    if config is not None and not config.is_file():
        _fail(f"settings file {config} does not exist")
    settings = _settings_or_exit(config=config, home=home, database_url=database_url, log_level=log_level)
    configure_logging(settings.log_level)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="DICOM port (0: any free port)")] = None,
    ae_title: Annotated[str | None, typer.Option("--ae-title", help="Called AE title")] = None,
    broker_url: Annotated[str | None, typer.Option(help="Celery broker (default: embedded)")] = None,
    worker: Annotated[
        bool | None, typer.Option("--worker/--no-worker", help="Run an embedded worker")
    ] = None,
) -> None:
    """DICOM SCP + export, with an embedded worker unless told not to."""
    from node.service import Node

    settings = _settings_or_exit(
        host=host, port=port, ae_title=ae_title, broker_url=broker_url, embedded_worker=worker
    )
    _check_directories(settings)
    _check_tls(settings)
    from alembic.util import CommandError

    from node.exceptions import ConfigurationError

    try:
        with _database("the audit database", upgrade_hint=False):
            Node(settings).run_forever()
    except ConfigurationError as exc:  # a database schema newer than this version
        _fail(str(exc), code=1)
    except CommandError as exc:  # Alembic could not migrate the database
        _fail(f"database upgrade failed: {_one_line(exc)}", code=1)
    except OSError as exc:
        if exc.filename is not None:  # a file or folder, not the socket
            _fail(f"cannot use {exc.filename}: {exc.strerror}", code=1)
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")


def _check_directories(settings: Settings) -> None:
    """Make the home and spool folders now, so that a bad path is named as such."""
    folders = {"CXR_NODE_HOME": settings.home, "CXR_NODE_SPOOL_DIR": settings.spool_path}
    for variable, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"cannot create the folder {folder} ({variable}): {exc.strerror}", code=1)
        if not os.access(folder, os.W_OK | os.X_OK):
            _fail(f"cannot write to the folder {folder} ({variable})", code=1)


def _check_tls(settings: Settings) -> None:
    """Load the SCP's TLS files now, so that a bad one is named rather than the socket."""
    import ssl

    from node.tls import server_context

    try:
        server_context(settings)
    except (ssl.SSLError, OSError) as exc:
        files = (
            f"CXR_NODE_TLS_CERT_FILE={settings.tls_cert_file}, CXR_NODE_TLS_KEY_FILE={settings.tls_key_file}"
        )
        if settings.tls_ca_file is not None:
            files += f", CXR_NODE_TLS_CA_FILE={settings.tls_ca_file}"
        why = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", exc.strerror or str(exc))  # OpenSSL's source line
        if isinstance(exc, ssl.SSLError):
            why += " (they must be a PEM certificate, its PEM key and a PEM CA bundle)"
        _fail(f"cannot load the TLS files ({files}): {why}", code=1)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Processes [default: worker_concurrency]")
    ] = None,
    queues: Annotated[str | None, typer.Option("--queues", "-Q", help="Comma-separated")] = None,
    pool: Annotated[str, typer.Option(help="prefork, solo or threads")] = "prefork",
    parent_pid: Annotated[
        int | None, typer.Option(hidden=True, help="Exit when this process (the node) dies")
    ] = None,
) -> None:
    """A Celery worker for the model queue (uses the GPU when present)."""
    from workers.app import get_app, is_embedded_broker

    settings = _settings_or_exit()
    concurrency = concurrency or settings.worker_concurrency
    if parent_pid is not None:
        from workers.parent import die_with_parent

        die_with_parent(parent_pid)
    if pool == "prefork" and concurrency > 1:
        # Each child process runs the networks with torch's own threads, one per
        # core by default: N children would oversubscribe the cores N times.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // concurrency)))
    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        f"--concurrency={concurrency}",
        f"--queues={queues or settings.model_queue}",
        f"--pool={pool}",
        f"--hostname=cxr-node-worker-{settings.model_queue}@%h",
    ]
    if is_embedded_broker(settings):
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    from node.exceptions import ConfigurationError
    from workers.readiness import install, wait_for_schema

    try:
        wait_for_schema(settings.db_url)  # no task before the database is at this version's head
    except ConfigurationError as exc:  # newer than this version
        _fail(str(exc), code=1)
    install(settings.home, concurrency, pool)  # each child loads its models before its first task
    get_app().worker_main(argv)


@app.command()
def send(
    files: Annotated[list[Path], typer.Argument(help="DICOM files to send")],
    to: Annotated[str, typer.Option("--to", help="AET@HOST:PORT")],
    aet: Annotated[str, typer.Option("--aet", help="Our calling AE title")] = "CXRNODE-SCU",
    timeout: Annotated[float, typer.Option(help="Seconds per network step")] = 30.0,
) -> None:
    """C-STORE files to a DICOM node; prints one status line per file."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from node.exceptions import SendError
    from node.scu import send_datasets

    try:
        destination = Destination.parse(to)
    except ValueError as exc:
        _fail(str(exc))
    datasets, sources, failed = [], [], 0
    for path in files:
        try:
            datasets.append(dcmread(path))
            sources.append(str(path))
        except (InvalidDicomError, OSError, EOFError) as exc:
            typer.echo(f"{path}: not sent: not a readable DICOM file ({exc})", err=True)
            failed += 1
    try:
        results = send_datasets(datasets, destination, aet, timeout=timeout, sources=sources)
    except SendError as exc:
        _fail(str(exc), code=1)
    for result in results:
        typer.echo(f"{result.source}: {result.sop_instance_uid} {result.describe()}")
        failed += int(not result.ok)
    if failed:
        raise typer.Exit(1)


def _summary(analysis: Analysis) -> str:
    """One analysed input in words, its numbers as the SC prints them (from the result, not the
    JSON record's rounded copies): the class and severity (or why not), urgency, changes."""
    from node.dicom.codes import CLASS_LABELS

    result = analysis.result
    assert result is not None  # an eligible input without an error has its result
    quality, severity = result.quality, result.severity
    reported = result.reported_class
    parts = [
        f"{CLASS_LABELS[reported]} ({result.classification[reported]:.2f})"
        if reported
        else "class not assessable",
        f"extent {severity.geographic_extent:.1f}/8, opacity {severity.opacity:.1f}/6"
        if quality.assessable
        else f"severity not assessable ({quality.description})",
    ]
    context = result.context
    if context is not None and context.triage is not None and context.triage.urgent:
        parts.append("URGENT (" + ", ".join(context.triage.reasons) + ")")
    elif context is not None and context.triage is not None and not context.triage.assessed:
        parts.append("triage not assessed")
    for change in context.changes if context is not None else []:
        when = change.case.study_date.isoformat() if change.case.study_date else "?"
        parts.append(f"since {when}: extent {change.geographic_extent:+.1f}, opacity {change.opacity:+.1f}")
    if context is not None and context.similar:
        parts.append(f"{len(context.similar)} similar earlier cases")
    return "; ".join([*parts, f"{analysis.seconds:.1f}s"])


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="DICOM, PNG or JPEG files")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input line")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", file_okay=False, writable=True, help="Also write SR/SC/SEG files to this folder"
        ),
    ] = None,
    heatmap: Annotated[str, typer.Option(help="gradcam, saliency or occlusion")] = "gradcam",
) -> None:
    """Run the whole pipeline on files, without a network or broker."""
    import json

    from tqdm import tqdm

    from workers.pipeline import analyze_path

    settings = _settings_or_exit()
    if out is not None:  # before any analysis: a bad folder would fail only after the models ran
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"--out: cannot create the folder {out}: {exc.strerror}")
    failed = 0
    bar = tqdm(paths, desc="analyze", unit="image", disable=len(paths) < 2, file=sys.stderr)
    for path in bar:
        analysis = analyze_path(
            path, out, heatmap=heatmap, min_age=settings.min_patient_age, settings=settings
        )
        failed += analysis.error is not None
        record = analysis.as_json()
        if as_json:
            typer.echo(json.dumps(record))
        elif analysis.error:
            typer.echo(f"{path}: error: {analysis.error}", err=True)
        elif not analysis.eligible:
            typer.echo(f"{path}: not analysed: {analysis.reason}")
        else:
            typer.echo(f"{path}: {_summary(analysis)}")
    if failed:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """The node's health and numbers, as /metrics has them, for a person."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from node.metrics import COUNTERS, snapshot

    snap = snapshot()
    schema = _schema_problem()
    console = Console()
    if schema is not None:  # the tables may read, but this version's code does not fit them
        console.print(f"[red]{escape(schema)}[/red]")
    if not snap.database_ok:
        console.print(f"[red]database unavailable[/red]: {snap.error}")
    else:
        console.print(f"database {'reachable' if schema else 'ok'}; queue depth {snap.queue_depth}")
        counts = Table("counter", "total", title="Since the database was created")
        for name, (_, _, help_text) in COUNTERS.items():
            counts.add_row(f"{name} ({help_text})", str(snap.counters[name]))
        console.print(counts)
        states = Table("what", "state", "count", title="Now")
        for state, n in sorted(snap.instances.items()):
            states.add_row("instances", state, str(n))
        for state, n in sorted(snap.outbox.items()):
            states.add_row("outbox", state, str(n))
        console.print(states)
        stages = Table("stage", "count", "mean seconds", title="Stage durations")
        for stage, timing in snap.stages.items():
            stages.add_row(stage, str(timing.count), f"{timing.mean_seconds:.2f}")
        console.print(stages)
    _print_worker_readiness(console)
    models = Table("role", "model", "version", title="Models")
    for role, info in sorted(snap.models.items()):
        models.add_row(role, info["name"], info["version"])
    console.print(models)
    if not snap.database_ok or schema is not None:
        raise typer.Exit(1)


def _schema_problem() -> str | None:
    """One line if the database's schema is not this version's Alembic head; None if it is,
    or if the database cannot be read (the snapshot says why)."""
    from sqlalchemy.exc import SQLAlchemyError

    from node.db.engine import schema_state

    try:
        return schema_state().problem
    except SQLAlchemyError:
        return None


def _print_worker_readiness(console) -> None:  # type: ignore[no-untyped-def]
    """Each worker of this home, and whether every one of its processes holds its models."""
    from node.settings import get_settings
    from workers.readiness import readiness

    found = readiness(get_settings().home)
    if not found.workers:
        console.print("workers: none has reported (a worker reports in its home's workers/ folder)")
        return
    word = "ready" if found.ready else "not ready"
    console.print(
        f"workers {word}: {found.ready_children} of {found.expected_children} "
        "worker processes hold their models"
    )
    for worker in found.workers:
        console.print(f"  {worker.name}: {min(worker.ready, worker.expected)} of {worker.expected}")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the database migrations."""
    from node.db.engine import upgrade
    from node.exceptions import ConfigurationError

    try:
        upgrade(revision=revision)
    except ConfigurationError as exc:  # a database schema newer than this version
        _fail(str(exc), code=1)
    except Exception as exc:
        _fail(f"database upgrade failed: {type(exc).__name__}: {exc}", code=1)
    typer.echo(f"database at revision {revision}")


@audit_app.command("tail")
def audit_tail(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0)] = 20,
    study: Annotated[str | None, typer.Option("--study", help="Only this Study Instance UID")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls with -f")] = 1.0,
) -> None:
    """Print the latest audit events, like tail(1)."""
    from node.db.audit import tail

    try:
        with _database("the audit log"):
            for line in tail(lines=lines, follow=follow, study_instance_uid=study, poll_seconds=interval):
                typer.echo(line)
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def _when(value: str | None, option: str):  # type: ignore[no-untyped-def]
    """An ISO 8601 date or date-time; without an offset it is this machine's local time."""
    from datetime import datetime

    if value is None:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not an ISO 8601 date or date-time (2026-11-30T08:00)")
    return stamp if stamp.tzinfo is not None else stamp.astimezone()


@audit_app.command("search")
def audit_search(
    since: Annotated[str | None, typer.Option(help="From this time on (ISO 8601, inclusive)")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601, exclusive)")] = None,
    event: Annotated[
        str | None, typer.Option("--event", help="An event kind (instance.received) or prefix (export)")
    ] = None,
    calling_ae: Annotated[str | None, typer.Option("--calling-ae", help="Only this calling AE")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Only this Study Instance UID")] = None,
    output_format: Annotated[str, typer.Option("--format", help="text, csv or json")] = "text",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, writable=True, help="Write to this file")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many (the oldest first)")] = None,
) -> None:
    """Find audit events by time range, event, calling AE and study; print or export them."""
    from node.db.audit import events, format_event
    from node.db.report import write_csv, write_json

    if output_format not in ("text", "csv", "json"):
        _fail(f"--format {output_format!r}: choose text, csv or json")
    start, end = _when(since, "--since"), _when(until, "--until")
    if start is not None and end is not None and end <= start:
        _fail("--until must be after --since")
    with _database("the audit log"):
        rows = events(
            kind=event, calling_ae=calling_ae, study_instance_uid=study, since=start, until=end, limit=limit
        )
    try:
        out = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror}", code=1)
    try:
        if output_format == "csv":
            write_csv(rows, out)
        elif output_format == "json":
            write_json(rows, out)
        else:
            for row in rows:
                out.write(format_event(row) + "\n")
    finally:
        if output:
            out.close()
    if output:
        typer.echo(f"{len(rows)} event(s) written to {output}", err=True)


@export_app.command("list")
def export_list(
    state: Annotated[
        OutboxStateName | None, typer.Option(case_sensitive=False, help="Only rows in this state")
    ] = None,
) -> None:
    """Show the outbox rows."""
    from node.export import outbox_rows

    with _database("the outbox"):
        rows = outbox_rows(state.value if state else None)
    for row in rows:
        error = f" {row.last_error}" if row.last_error else ""
        typer.echo(
            f"{row.id:>6} {row.state:<8} {row.kind:<4} {row.destination} tries={row.attempts} "
            f"sop={row.sop_instance_uid}{error}"
        )


@export_app.command("retry")
def export_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(min=1, max=2**63 - 1, help="Outbox row ids (default: all dead)")
    ] = None,
) -> None:
    """Give dead exports a fresh set of attempts (the running node delivers them)."""
    from sqlalchemy import select

    from node.db.engine import session_scope
    from node.db.tables import OutboxItem
    from node.export import retry_dead

    ids = list(dict.fromkeys(ids or ()))
    with _database("the outbox"):
        if ids:
            with session_scope() as session:
                found = set(session.scalars(select(OutboxItem.id).where(OutboxItem.id.in_(ids))))
            ids, missing = [i for i in ids if i in found], [i for i in ids if i not in found]
            count = retry_dead(ids) if ids else 0
        else:
            missing, count = [], retry_dead(all_dead=True)
    typer.echo(f"{count} export(s) queued for delivery")
    if count < len(ids):
        typer.echo(f"{len(ids) - count} left as they are: sent or being sent")
    if missing:
        _fail(f"no outbox row with id {', '.join(map(str, missing))}", code=1)


# `train` and `eval` live with the models; models.training.cli imports torch only inside its commands.
app.add_typer(train_app, name="train", help="Train every model on ../shared/data (one run).")
app.add_typer(eval_app, name="eval", help="Evaluate a model on held-out data.")


if __name__ == "__main__":
    app()
