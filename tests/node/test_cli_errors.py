"""Bad settings and bad arguments: one line on stderr and a non-zero exit, never a traceback.

Each command runs as an operator runs it, in its own process (``python -m node.cli``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.db.tables import OutboxState
from node.settings import Settings, reset
from tests.helpers import CLI, cli_env

# Nothing listens on port 1: connecting is refused at once.
UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/x"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "home")


@pytest.fixture
def settings_env(monkeypatch):  # type: ignore[no-untyped-def]
    """Settings built from the defaults only, whatever this shell exports."""
    for key in list(os.environ):
        if key.startswith("CXR_NODE_"):
            monkeypatch.delenv(key)
    reset()
    yield monkeypatch
    reset()


def cxr(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120, check=False
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The error the command ended with; fails unless it is one ``cxr-node:`` line naming ``words``."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cxr-node: "), done.stderr
    for word in words:
        assert word in last, last
    return last


def migrated(env: dict[str, str]) -> dict[str, str]:
    done = cxr(env, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    return env


# 1. Settings that are not valid fail as settings, in the one-line path -------------------------


def test_unparseable_database_url(env: dict[str, str]) -> None:
    for command in (("audit", "tail"), ("audit", "search"), ("export", "list")):
        done = cxr(env, *command, CXR_NODE_DATABASE_URL="notaurl")
        one_line_error(done, 2, "database_url", "not a SQLAlchemy database URL")
    done = cxr(env, "audit", "tail", CXR_NODE_DATABASE_URL="postgres://u@h/db")  # SQLAlchemy 1.4 dropped it
    one_line_error(done, 2, "database_url", "'postgres'")


def test_unknown_log_level_and_any_case(env: dict[str, str], settings_env) -> None:  # type: ignore[no-untyped-def]
    done = cxr(env, "export", "list", CXR_NODE_LOG_LEVEL="LOUD")
    one_line_error(done, 2, "log_level", "WARNING")
    done = cxr(env, "--log-level", "loud", "export", "list")
    one_line_error(done, 2, "log_level")
    assert Settings(log_level="debug").log_level == "DEBUG"
    assert Settings(log_level=" Warning ").log_level == "WARNING"
    assert Settings(log_level="warn").log_level == "WARNING"  # logging's and Celery's alias


def test_a_database_driver_that_is_not_installed(env: dict[str, str]) -> None:
    """A URL naming a driver this install lacks (psycopg2; the node ships psycopg 3) printed a
    ModuleNotFoundError traceback."""
    done = cxr(env, "export", "list", CXR_NODE_DATABASE_URL="postgresql+psycopg2://u@127.0.0.1:1/db")
    one_line_error(done, 1, "driver is not installed", "psycopg2")


def test_malformed_toml(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = [\n")
    one_line_error(cxr(env, "export", "list", CXR_NODE_CONFIG=str(bad)), 2, str(bad), "not valid TOML")
    one_line_error(cxr(env, "--config", str(bad), "export", "list"), 2, str(bad), "not valid TOML")


def test_serve_reports_an_unreachable_database(env: dict[str, str]) -> None:
    done = cxr(env, "serve", "--no-worker", CXR_NODE_DATABASE_URL=UNREACHABLE_DB)
    one_line_error(done, 1, "cannot connect to the database", "127.0.0.1:1", "refused")


# 2. serve names what failed: the folder, the TLS files, or (only then) the socket ------------


def test_serve_home_or_spool_under_a_file(env: dict[str, str], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    done = cxr(env, "serve", "--no-worker", CXR_NODE_HOME=str(plain / "home"))
    line = one_line_error(done, 1, "CXR_NODE_HOME", str(plain / "home"), "Not a directory")
    assert "listen" not in line
    done = cxr(env, "serve", "--no-worker", CXR_NODE_SPOOL_DIR=str(plain / "spool"))
    line = one_line_error(done, 1, "CXR_NODE_SPOOL_DIR", "Not a directory")
    assert "listen" not in line


def test_serve_tls_files_that_are_not_pem(env: dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    done = cxr(env, "serve", "--no-worker", CXR_NODE_TLS_CERT_FILE=str(junk), CXR_NODE_TLS_KEY_FILE=str(junk))
    line = one_line_error(done, 1, "TLS", str(junk), "PEM")
    assert "listen" not in line and "_ssl.c" not in line


def test_serve_port_in_use_still_says_listen(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cxr(env, "serve", "--no-worker", "--port", str(port))
    one_line_error(done, 2, f"cannot listen on 127.0.0.1:{port}")


# 3. export and audit commands: database down or not migrated, output file unusable -----------


@pytest.mark.parametrize("command", [("export", "list"), ("export", "retry"), ("export", "retry", "1")])
def test_export_commands_without_a_database(env: dict[str, str], command: tuple[str, ...]) -> None:
    done = cxr(env, *command, CXR_NODE_DATABASE_URL=UNREACHABLE_DB)
    one_line_error(done, 1, "cannot connect to the database")
    done = cxr(env, *command)  # a fresh SQLite file: no tables yet
    one_line_error(done, 1, "outbox", "cxr-node db upgrade")


def test_audit_search_output_that_cannot_be_written(env: dict[str, str], tmp_path: Path) -> None:
    migrated(env)
    missing = tmp_path / "nonexistent" / "x.csv"
    done = cxr(env, "audit", "search", "--format", "csv", "-o", str(missing))
    one_line_error(done, 1, str(missing), "No such file or directory")
    done = cxr(env, "audit", "search", "--format", "csv", "-o", f"{tmp_path}/")
    assert done.returncode == 2 and "is a directory" in done.stderr and "Traceback" not in done.stderr
    done = cxr(env, "audit", "search", "--format", "csv", "-o", str(tmp_path / "ok.csv"))
    assert done.returncode == 0 and (tmp_path / "ok.csv").is_file(), done.stderr


# 4. environment is case-insensitive, and an unknown one is refused ---------------------------


def test_environment_any_case(env: dict[str, str], settings_env) -> None:  # type: ignore[no-untyped-def]
    done = cxr(env, "serve", "--no-worker", CXR_NODE_ENVIRONMENT="Production")
    one_line_error(done, 2, "ALLOWED_CALLING_AETS")
    with pytest.raises(ValidationError, match="ALLOWED_CALLING_AETS"):
        Settings(environment="PRODUCTION ")
    assert Settings(environment="Production", allow_any_calling_aet=True).environment == "production"
    with pytest.raises(ValidationError, match="'development' or 'production'"):
        Settings(environment="prod")


# 5. Bounds on times, sizes and ages -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("acse_timeout", -1),
        ("acse_timeout", 0),
        ("dimse_timeout", -5),
        ("network_timeout", -0.5),
        ("max_pdu", -1),
        ("max_pdu", 2**32),
        ("min_patient_age", -1),
    ],
)
def test_out_of_range_numbers(settings_env, name: str, value: float) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})


def test_zero_max_pdu_is_unlimited(settings_env) -> None:  # type: ignore[no-untyped-def]
    assert Settings(max_pdu=0, min_patient_age=0).max_pdu == 0  # pynetdicom: 0 is no limit


def test_negative_timeout_on_the_command_line(env: dict[str, str]) -> None:
    done = cxr(env, "serve", "--no-worker", CXR_NODE_DIMSE_TIMEOUT="-1")
    one_line_error(done, 2, "dimse_timeout")


# 6. The triage webhook is an http(s) URL with a host --------------------------------------------


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/x", "http://", "https:///path", "http://[::1"])
def test_webhook_must_be_http_url(settings_env, url: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="triage_webhook"):
        Settings(triage_webhook=url)


def test_webhook_accepted_and_refused(env: dict[str, str], settings_env) -> None:  # type: ignore[no-untyped-def]
    assert (
        Settings(triage_webhook="https://hooks.example:8443/x").triage_webhook
        == "https://hooks.example:8443/x"
    )
    assert Settings(triage_webhook="").triage_webhook is None
    done = cxr(env, "serve", "--no-worker", CXR_NODE_TRIAGE_WEBHOOK="notaurl")
    one_line_error(done, 2, "triage_webhook", "http(s) URL")


# 7. analyze checks --out before it runs a model -------------------------------------------------


def test_analyze_out_is_checked_first(env: dict[str, str], tmp_path: Path, cr_chest: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    started = time.monotonic()
    done = cxr(env, "analyze", str(cr_chest), "--out", str(plain))
    assert done.returncode == 2 and "is a file" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not done.stdout
    done = cxr(env, "analyze", str(cr_chest), "--out", str(plain / "sub"))
    one_line_error(done, 2, "--out", str(plain / "sub"), "Not a directory")
    assert not done.stdout
    assert time.monotonic() - started < 30  # no model was loaded


# 8. No silent success -----------------------------------------------------------------------------


def test_export_list_state_is_a_choice(env: dict[str, str]) -> None:
    migrated(env)
    done = cxr(env, "export", "list", "--state", "bogus")
    assert done.returncode == 2 and "bogus" in done.stderr and "Traceback" not in done.stderr
    assert cxr(env, "export", "list", "--state", "DEAD").returncode == 0
    from node.cli import OutboxStateName

    assert {s.value for s in OutboxStateName} == {
        v for k, v in vars(OutboxState).items() if not k.startswith("_")
    }


def test_export_retry_names_missing_ids(env: dict[str, str]) -> None:
    migrated(env)
    done = cxr(env, "export", "retry", "999", "1000")
    one_line_error(done, 1, "999", "1000")
    done = cxr(env, "export", "retry", "99999999999999999999")  # over SQL's INTEGER: was a traceback
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert cxr(env, "export", "retry").returncode == 0  # every dead row: none is not an error
