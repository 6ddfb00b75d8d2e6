"""The node's archive of analysed images: similar earlier cases, the patient's course, triage.

Every analysed image leaves one row in ``analyses`` (:class:`ArchivedAnalysis`):
UIDs, study date, results, the triage decision and its retrieval embedding
(:mod:`models.retrieval`). Before the outputs of a new image are built,
:func:`case_context` reads the archive:

- **similar cases** (Keidar et al. 2021): the ``similar_cases`` nearest earlier
  images by cosine distance, from a FAISS inner-product index that each
  process keeps in memory and brings up to date from the database by row id
  before every query (so several workers on several hosts share one archive
  through PostgreSQL). The patient's own images are left out unless
  ``similar_same_patient`` is set.
- **the patient's course** (Cohen et al. 2020's stated use): earlier studies of
  the same patient (Patient ID + Issuer of Patient ID), oldest first, and the
  change in extent and opacity since the previous and since the first; only
  studies scored by the same models (:func:`score_models`): after a model
  upgrade an unchanged film read "extent -1.6 since the previous study".
- **triage** (:mod:`node.triage`).

The patient is known only as a keyed hash (HMAC-SHA256 under a secret file of
the node), so the archive holds no patient ID; workers that share an archive
must share that file (``patient_key_file``). Nothing here logs patient data.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.result import AnalysisResult, CaseContext, PriorCase, SeverityChange, SimilarCase
from node import triage
from node.db.engine import session_scope
from node.db.tables import ArchivedAnalysis
from node.dicom.source import study_date
from node.settings import Settings

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _secret(path: Path) -> bytes:
    """The node's patient-key secret, made (mode 0600) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    for _ in range(50):  # another process may have made the file and not yet written it
        secret = path.read_text().strip().encode()
        if len(secret) >= 32:
            return secret
        time.sleep(0.02)
    raise ValueError(f"patient key file {path} holds fewer than 32 characters")


def patient_key(ds: Dataset, settings: Settings) -> str | None:
    """Keyed hash of Patient ID and Issuer of Patient ID; None without a Patient ID."""
    patient_id = str(ds.get("PatientID") or "").strip()
    if not patient_id:
        return None
    issuer = str(ds.get("IssuerOfPatientID") or "").strip()
    return _keyed(settings, f"{issuer}\x00{patient_id}")


def person_key(ds: Dataset, settings: Settings) -> str | None:
    """Keyed hash of Patient's Birth Date and Sex; None without either. Patient IDs collide (two
    issuers, a missing Issuer of Patient ID): two archived films with the same patient key and
    different person keys are two people, and one is never the other's earlier study."""
    birth = str(ds.get("PatientBirthDate") or "").strip()
    sex = str(ds.get("PatientSex") or "").strip().upper()
    if not birth or sex not in ("M", "F", "O"):
        return None
    return _keyed(settings, f"person\x00{birth}\x00{sex}")


def _keyed(settings: Settings, text: str) -> str:
    """HMAC-SHA256 of ``text`` under the node's patient-key secret."""
    secret = _secret(settings.patient_key_file or settings.home / "patient-key")
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def score_models(result: AnalysisResult) -> str:
    """The models an image's severity scores come from: LungNet and the severity ridge."""
    return f"{result.models.get('segmentation', '')}+{result.models.get('severity', '')}"


def _same_person(row: ArchivedAnalysis, person: str | None) -> bool:
    """Not known to be someone else: the person keys agree, or either is unknown."""
    return person is None or row.person_key is None or row.person_key == person


def _prior(row: ArchivedAnalysis) -> PriorCase:
    return PriorCase(
        sop_instance_uid=row.sop_instance_uid,
        sop_class_uid=row.sop_class_uid,
        study_instance_uid=row.study_instance_uid,
        series_instance_uid=row.series_instance_uid,
        study_date=row.study_date,
        predicted_class=row.predicted_class,
        geographic_extent=row.geographic_extent,
        opacity=row.opacity,
        rows=row.rows,
        columns=row.columns,
    )


class EmbeddingIndex:
    """Exact inner-product (cosine) search over one embedding model's archived vectors.

    FAISS ``IndexFlatIP`` under an ``IndexIDMap2`` keyed by the archive row id;
    :meth:`sync` adds the rows other processes committed since the last call.
    """

    def __init__(self, model: str, dim: int) -> None:
        import faiss

        self.model = model
        self.dim = dim
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.last_id = 0
        self.lock = threading.Lock()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        with self.lock:
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids.astype(np.int64))
            self.last_id = max(self.last_id, int(ids.max()))

    def sync(self, session: Session) -> None:
        rows = session.execute(
            select(ArchivedAnalysis.id, ArchivedAnalysis.embedding)
            .where(ArchivedAnalysis.embedding_model == self.model, ArchivedAnalysis.id > self.last_id)
            .order_by(ArchivedAnalysis.id)
        ).all()
        rows = [r for r in rows if len(r.embedding) == 4 * self.dim]
        if rows:
            self.add(
                np.array([r.id for r in rows]), np.stack([np.frombuffer(r.embedding, "<f4") for r in rows])
            )

    def search(self, query: np.ndarray, k: int, exclude: list[int]) -> list[tuple[int, float]]:
        """The ``k`` nearest (row id, cosine distance), never the ids in ``exclude``."""
        import faiss

        with self.lock:
            if self.index.ntotal == 0 or k <= 0:
                return []
            params = None
            # SWIG selectors hold raw pointers: keep each Python object alive through the search.
            batch = faiss.IDSelectorBatch(np.asarray(exclude or [-1], np.int64))
            selector = faiss.IDSelectorNot(batch)
            if exclude:
                params = faiss.SearchParameters()
                params.sel = selector
            sims, ids = self.index.search(np.asarray(query, np.float32)[None], k, params=params)
            del batch, selector
        return [(int(i), float(1.0 - s)) for s, i in zip(sims[0], ids[0], strict=True) if i >= 0]


_indexes: dict[tuple[int, str, str], EmbeddingIndex] = {}
_indexes_lock = threading.Lock()


def embedding_index(settings: Settings, model: str, dim: int) -> EmbeddingIndex:
    """This process's index for ``model`` over the settings' database."""
    key = (os.getpid(), settings.db_url, model)
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None or index.dim != dim:
            index = _indexes[key] = EmbeddingIndex(model, dim)
        return index


def _earlier(rows: list[ArchivedAnalysis], day: date, clock: str | None) -> list[ArchivedAnalysis]:
    """One image per earlier study, oldest first (by study date, then time)."""
    this = (day, clock or "")
    dated = [r for r in rows if r.study_date is not None]  # an undated film has no place in it
    by_study: dict[str, ArchivedAnalysis] = {}
    for row in sorted(dated, key=lambda r: (r.study_date, r.study_time or "", r.id)):
        if (row.study_date, row.study_time or "") < this:
            by_study.setdefault(row.study_instance_uid, row)
    return list(by_study.values())


def _changes(result: AnalysisResult, day: date, course: list[PriorCase]) -> list[SeverityChange]:
    picks = [("previous", course[-1])] + ([("first", course[0])] if len(course) > 1 else [])
    return [
        SeverityChange(
            since=since,
            case=case,
            days=(day - case.study_date).days if case.study_date else None,
            geographic_extent=result.severity.geographic_extent - case.geographic_extent,
            opacity=result.severity.opacity - case.opacity,
        )
        for since, case in picks
    ]


def readable(settings: Settings) -> bool:
    """Whether the archive may exist: a server database, or an SQLite file that is there."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.db_url)
    if url.get_backend_name() != "sqlite":
        return True
    database = url.database or ""
    return database not in ("", ":memory:") and Path(database).is_file()


def case_context(
    ds: Dataset | None, result: AnalysisResult, settings: Settings, use_archive: bool = True
) -> CaseContext:
    """Similar cases, the patient's course and the triage decision for one analysed image.

    Without a DICOM header ``ds`` (a PNG or JPEG), with ``use_archive`` False,
    or when the archive cannot be read (an ``analyze`` run beside a database
    that does not exist or predates the archive), only the triage decision is made.
    """
    context = CaseContext()
    if ds is not None and use_archive:
        try:
            _from_archive(ds, result, settings, context)
        except SQLAlchemyError as exc:
            logger.warning("archive unavailable (%s); no similar cases or course", type(exc).__name__)
    auto = float(result.extra.get("covid19_threshold", 0.5))
    context.triage = triage.evaluate(settings.triage_rule, result, context.changes, auto)
    return context


def _from_archive(ds: Dataset, result: AnalysisResult, settings: Settings, context: CaseContext) -> None:
    key = patient_key(ds, settings)
    sop = str(ds.SOPInstanceUID)
    day, clock = study_date(ds)
    with session_scope(settings.db_url) as session:
        own: list[ArchivedAnalysis] = []
        if key is not None:
            own = list(
                session.scalars(
                    select(ArchivedAnalysis).where(
                        ArchivedAnalysis.patient_key == key, ArchivedAnalysis.sop_instance_uid != sop
                    )
                )
            )
        if day is not None:
            person = person_key(ds, settings)
            study = str(ds.get("StudyInstanceUID", ""))
            models = score_models(result)
            # Scores of other models (or of rows archived before they were recorded) do not
            # compare with this film's: left out of its course, its changes and its trend.
            others = [
                r
                for r in own
                if r.study_instance_uid != study and _same_person(r, person) and r.score_models == models
            ]
            context.course = [_prior(r) for r in _earlier(others, day, clock)]
            if context.course and result.quality.assessable:  # no change from a withheld score
                context.changes = _changes(result, day, context.course)
        # The embedding is pooled over the lung outline: none to search by when the outline failed.
        if settings.similar_cases > 0 and result.embedding is not None and result.quality.assessable:
            model = result.models.get("retrieval", "")
            index = embedding_index(settings, model, int(result.embedding.shape[0]))
            index.sync(session)
            exclude = [r.id for r in own] if not settings.similar_same_patient else []
            exclude += list(
                session.scalars(select(ArchivedAnalysis.id).where(ArchivedAnalysis.sop_instance_uid == sop))
            )
            hits = index.search(result.embedding, settings.similar_cases, exclude)
            rows = {
                r.id: r
                for r in session.scalars(
                    select(ArchivedAnalysis).where(ArchivedAnalysis.id.in_([i for i, _ in hits]))
                )
            }
            context.similar = [SimilarCase(_prior(rows[i]), d) for i, d in hits if i in rows]


def record(session: Session, ds: Dataset, result: AnalysisResult, settings: Settings) -> None:
    """Add (or, for a redelivered task, refresh) the image's archive row in ``session``.

    An image whose lung outline failed the quality check is not archived: its scores were
    withheld, so it is no baseline for a later study's change (or a change rule's trigger), and
    its class and scores are no similar case to show."""
    if result.embedding is None or not result.quality.assessable:
        return
    sop = str(ds.SOPInstanceUID)
    row = session.scalars(select(ArchivedAnalysis).where(ArchivedAnalysis.sop_instance_uid == sop)).first()
    if row is None:
        row = ArchivedAnalysis(sop_instance_uid=sop)
        session.add(row)
    day, clock = study_date(ds)
    values: dict[str, Any] = {
        "sop_class_uid": str(ds.SOPClassUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "patient_key": patient_key(ds, settings),
        "person_key": person_key(ds, settings),
        "study_date": day,
        "study_time": clock,
        "predicted_class": result.predicted_class,
        "covid19_probability": float(result.classification["covid19"]),
        "geographic_extent": float(result.severity.geographic_extent),
        "opacity": float(result.severity.opacity),
        "rows": int(ds.Rows) if ds.get("Rows") else None,
        "columns": int(ds.Columns) if ds.get("Columns") else None,
        "urgent": bool(result.context and result.context.triage and result.context.triage.urgent),
        "embedding_model": result.models.get("retrieval", ""),
        "embedding": np.asarray(result.embedding, "<f4").tobytes(),
        "score_models": score_models(result),
    }
    for name, value in values.items():
        setattr(row, name, value)
