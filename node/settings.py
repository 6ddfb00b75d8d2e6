"""The node's one settings object.

Values come, lowest precedence first, from the defaults below, an optional TOML
file (``CXR_NODE_CONFIG`` or ``--config``), environment variables prefixed
``CXR_NODE_`` and finally command-line flags (passed as init kwargs by the CLI).
Read it through :func:`get_settings`, never a module global, so tests and
forked workers can override it (:func:`configure`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# PS3.5 6.2: an AE title is 1-16 characters of the default repertoire, no backslash
# or control characters; leading/trailing spaces are not significant.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
# Smallest SC the node makes when asked to downscale: the legend is sized from the
# image and the models see 256 px, so below this the SC says less than the SR.
MIN_SC_SIZE = 256


def _default_home() -> Path:
    return Path(os.environ.get("CXR_NODE_HOME", Path.cwd() / ".cxr-node"))


def validate_ae_title(value: str) -> str:
    """Return ``value`` stripped if it is a valid AE title, else raise ValueError."""
    ae = value.strip()
    if not ae or not _AE_RE.match(ae):
        raise ValueError(f"invalid AE title {value!r}: 1-16 printable characters, no backslash")
    return ae


@dataclass(frozen=True)
class Destination:
    """A C-STORE destination written ``AET@host:port``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        m = re.fullmatch(r"\s*([^@]+)@(\[[^\]]+\]|[^:]+):(\d{1,5})\s*", text)
        if not m:
            raise ValueError(f"destination {text!r} is not of the form AET@host:port")
        host = m.group(2).strip("[]")
        port = int(m.group(3))
        if not 0 < port < 65536:
            raise ValueError(f"destination {text!r}: port out of range")
        return cls(validate_ae_title(m.group(1)), host, port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Configuration of one node (SCP, queue, audit database, export)."""

    model_config = SettingsConfigDict(
        env_prefix="CXR_NODE_",
        extra="ignore",
        validate_default=True,
    )

    # Where the TOML file is; read by settings_customise_sources.
    config: Path | None = None
    environment: Literal["development", "production"] = Field(
        "development", description="'production' enables strict checks (any case)"
    )

    # DICOM SCP
    ae_title: str = "CXRNODE"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535)
    allowed_calling_aets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_any_calling_aet: bool = Field(
        False, description="permit an empty allow-list when environment is production"
    )
    max_associations: int = Field(16, ge=1)
    # Seconds; pynetdicom takes 0 as "time out at once", never what is meant.
    acse_timeout: float = Field(30.0, gt=0)
    dimse_timeout: float = Field(60.0, gt=0)
    network_timeout: float = Field(60.0, gt=0)
    # PS3.8 D.3.3.1: the Maximum Length is a 4-byte unsigned value; 0: unlimited.
    max_pdu: int = Field(0, ge=0, le=2**32 - 1)

    # DICOM TLS (PS3.15 Annex B.1, the Basic TLS Secure Transport Connection profile)
    tls_cert_file: Path | None = Field(None, description="PEM certificate: the SCP listens with TLS")
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle: peers must present a certificate it signed"
    )
    export_tls: bool = Field(False, description="use TLS (and our certificate) towards destinations")

    # Storage
    home: Path = Field(default_factory=_default_home)
    spool_dir: Path | None = None
    min_free_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="refuse stores (0xA700) below this much free space"
    )

    # Routing
    min_patient_age: int = Field(18, ge=0)

    # Audit database and queue
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    embedded_worker: bool = True
    # Worker processes (prefork). Two on a 2-core CPU box: C-STORE -> SR p50 0.89 s
    # and 6,400 studies/hour against 1.04 s and 3,398 with one (bench_pipeline,
    # README; the networks use both cores, the Python around them one). ~0.9 GB each.
    worker_concurrency: int = Field(2, ge=1)
    sweep_interval_seconds: float = Field(60.0, gt=0)
    stale_job_seconds: float = Field(
        900.0, gt=0, description="re-queue a queued/running instance untouched for this long"
    )
    max_lost_starts: int = Field(
        3,
        ge=1,
        description="an instance whose analysis started this many times in a row and never ended "
        "(the worker was lost each time, e.g. killed for memory by this image) is tried once more "
        "alone in its worker process, and failed if that start is lost too",
    )
    model_queue: str = "models"

    # GPU workers (workers/batching.py): with `--pool threads -c N`, studies that
    # arrive together share one forward pass; 0 runs one forward per study.
    batch_window_ms: float = Field(0.0, ge=0, description="wait this long for studies to batch")
    batch_max: int = Field(16, ge=1)

    # Export
    destinations: Annotated[list[Destination], NoDecode] = Field(default_factory=list)
    export_max_attempts: int = Field(8, ge=1)
    export_backoff_seconds: float = Field(5.0, gt=0)

    # The heatmap secondary capture (node/dicom/sc.py): a secondary view, so by default
    # no larger than a viewer shows it (the SR and SEG keep the source's geometry).
    sc_max_size: int = Field(
        2048,
        ge=0,
        description="longest side of the SC in pixels (downscaled, spacing scaled); 0: full size "
        "(under 512 px on the shorter side, upscaled either way)",
    )
    sc_compression: Literal["none", "jpeg-ls"] = Field(
        "none", description="SC transfer syntax: none (Explicit VR Little Endian) or jpeg-ls (lossless)"
    )

    # The node's archive (node/archive.py): similar earlier cases, the patient's course, triage.
    similar_cases: int = Field(5, ge=0, le=50, description="nearest earlier images listed; 0: none")
    similar_same_patient: bool = Field(False, description="also list the patient's own earlier images")
    patient_key_file: Path | None = Field(
        None, description="secret keying the patient hash (default: <home>/patient-key, made on first use)"
    )
    triage_rule: str = Field(
        "covid19 >= auto or extent >= 4",
        description="'or'-joined 'metric >= value' conditions; metrics: normal, other_disease, pneumonia, "
        "covid19 (value 'auto': the registry's threshold, 97 % sensitivity out of source), extent, "
        "opacity, extent_increase, opacity_increase (since the previous study); empty: no triage",
    )
    triage_webhook: str | None = Field(None, description="POST urgent studies (UIDs only) as JSON here")

    # Monitoring: GET /metrics (Prometheus) and /health on this address; port 0 disables.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9110, ge=0, le=65535, description="0: no metrics/health endpoint")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_path(init_settings)
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("environment", mode="before")
    @classmethod
    def _environment_any_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        level = v.strip().upper()
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)  # logging's own aliases

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        if not v:
            return None
        try:
            make_url(v).get_dialect()  # the dialect, not its driver: nothing connects here
        except NoSuchModuleError:  # a subclass of ArgumentError
            raise ValueError(f"unknown database kind {make_url(v).drivername!r}") from None
        except ArgumentError:
            raise ValueError(
                "not a SQLAlchemy database URL (e.g. postgresql+psycopg://user@host/db)"
            ) from None
        return v

    @field_validator("triage_webhook")
    @classmethod
    def _check_webhook(cls, v: str | None) -> str | None:
        if not v:
            return None
        try:
            url = urlsplit(v.strip())
            ok = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
        except ValueError:  # an unclosed '[', a port out of range
            ok = False
        if not ok:
            raise ValueError(f"{v!r} is not an http(s) URL with a host")
        return v.strip()

    @field_validator("sc_max_size")
    @classmethod
    def _check_sc_size(cls, v: int) -> int:
        if 0 < v < MIN_SC_SIZE:
            raise ValueError(f"must be 0 (full size) or at least {MIN_SC_SIZE} pixels")
        return v

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, v: str) -> str:
        return validate_ae_title(v)

    @field_validator("allowed_calling_aets", mode="before")
    @classmethod
    def _split_aets(cls, v: Any) -> Any:
        return _split_csv(v)

    @field_validator("allowed_calling_aets")
    @classmethod
    def _check_aets(cls, v: list[str]) -> list[str]:
        return [validate_ae_title(ae) for ae in v]

    @field_validator("destinations", mode="before")
    @classmethod
    def _parse_destinations(cls, v: Any) -> Any:
        items = _split_csv(v) or []
        return [d if isinstance(d, Destination) else Destination.parse(str(d)) for d in items]

    @model_validator(mode="after")
    def _production_needs_allow_list(self) -> Settings:
        if (
            self.environment == "production"
            and not self.allowed_calling_aets
            and not self.allow_any_calling_aet
        ):
            raise ValueError(
                "production settings need CXR_NODE_ALLOWED_CALLING_AETS "
                "(or CXR_NODE_ALLOW_ANY_CALLING_AET=true to accept every modality)"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("CXR_NODE_TLS_CERT_FILE and CXR_NODE_TLS_KEY_FILE go together")
        for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name.upper()}: {path} is not a file")
        return self

    @field_validator("triage_rule")
    @classmethod
    def _check_triage_rule(cls, v: str) -> str:
        from node.triage import parse_rule

        parse_rule(v)  # ValueError names the bad condition
        return v

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    # Derived locations -------------------------------------------------------------
    @property
    def spool_path(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.home / "spool"

    @property
    def outputs_path(self) -> Path:
        return self.home / "outputs"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'audit.sqlite'}"

    @property
    def broker(self) -> str:
        """The Celery broker; with none configured, kombu's filesystem transport."""
        return self.broker_url or "filesystem://"

    @property
    def embedded_broker_dir(self) -> Path:
        return self.home / "broker"


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``CXR_NODE_*`` variables, so a child process sees the same values."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None or name == "config":
            continue
        if isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"CXR_NODE_{name.upper()}"] = text
    return env


def _toml_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    value = init_settings().get("config") or os.environ.get("CXR_NODE_CONFIG")
    return Path(value) if value else None


_overrides: dict[str, Any] = {}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once from the environment and CLI overrides."""
    return Settings(**_overrides)


def configure(**overrides: Any) -> Settings:
    """Set values that win over the environment (CLI flags, tests) and rebuild.

    ``None`` values are ignored so a CLI can pass its options through unfiltered.
    """
    _overrides.update({k: v for k, v in overrides.items() if v is not None})
    get_settings.cache_clear()
    return get_settings()


def reset() -> None:
    """Forget overrides and the cached settings (tests, after the environment changed)."""
    _overrides.clear()
    get_settings.cache_clear()
