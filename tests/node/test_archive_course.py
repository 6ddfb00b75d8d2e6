"""A patient's course from the archive: which earlier films count (no models run here)."""

from __future__ import annotations

from datetime import date

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.archive import case_context, patient_key, person_key, score_models
from node.db.engine import session_scope, upgrade
from node.db.tables import ArchivedAnalysis
from node.settings import Settings, configure
from tests.node.dicom.fakes import make_result


def _film(day: str, birth: str = "19600101", sex: str = "F") -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "PATA001", birth, sex
    ds.StudyDate, ds.StudyTime = day, "101500"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        generate_uid(),
        generate_uid(),
        generate_uid(),
    )
    ds.Rows, ds.Columns = 64, 64
    return ds


def _archive(
    settings: Settings, ds: Dataset, day: date | None, extent: float, models: str | None = "same"
) -> None:
    with session_scope() as session:
        session.add(
            ArchivedAnalysis(
                sop_instance_uid=ds.SOPInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                study_instance_uid=ds.StudyInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID,
                patient_key=patient_key(ds, settings),
                person_key=person_key(ds, settings),
                study_date=day,
                study_time="101500" if day else None,
                predicted_class="covid19",
                covid19_probability=0.9,
                geographic_extent=extent,
                opacity=1.0,
                embedding_model="none",
                embedding=np.zeros(4, "<f4").tobytes(),
                score_models=score_models(make_result(ds)) if models == "same" else models,
            )
        )


def _course(settings: Settings, ds: Dataset) -> list[date | None]:
    context = case_context(ds, make_result(ds), settings)
    return [c.study_date for c in context.course]


def test_an_undated_film_is_left_out_of_the_course(node_config) -> None:  # type: ignore[no-untyped-def]
    """An archived film with no Study Date made every later film of the patient fail
    (TypeError sorting None against a date): no SR, SC or SEG, for good."""
    settings = configure(similar_cases=0)
    upgrade()
    _archive(settings, _film("20240301"), date(2024, 3, 1), 2.0)
    _archive(settings, _film(""), None, 3.0)
    assert _course(settings, _film("20240305")) == [date(2024, 3, 1)]


def test_one_id_two_people_are_two_courses(node_config) -> None:  # type: ignore[no-untyped-def]
    """Patients were matched on Patient ID (and issuer) alone: another hospital's patient with
    the same ID, no issuer, got her films as his 'previous study' and his changes from them."""
    settings = configure(similar_cases=0)
    upgrade()
    _archive(settings, _film("20240301"), date(2024, 3, 1), 2.0)
    bob = _film("20240310", birth="19900505", sex="M")
    assert _course(settings, bob) == []
    assert _course(settings, _film("20240310")) == [date(2024, 3, 1)]  # the same woman: her course
    unknown = _film("20240310", birth="", sex="")
    assert _course(settings, unknown) == [date(2024, 3, 1)]  # nothing says otherwise


def test_only_scores_of_the_same_models_make_the_course(node_config) -> None:  # type: ignore[no-untyped-def]
    """After a model upgrade the same film read "extent -1.6 since the previous study" (the old
    ridge's score against the new one's), and an archive row written before the models were
    recorded (or by an older worker during a rolling upgrade, without a person key either)
    joined anyone with the Patient ID (found by a black-box review of an upgrade)."""
    settings = configure(similar_cases=0)
    upgrade()
    _archive(settings, _film("20240301"), date(2024, 3, 1), 2.0)
    _archive(settings, _film("20240302"), date(2024, 3, 2), 5.0, models="lung-net@2.0.0+severity-ridge@2.0.0")
    _archive(settings, _film("20240303", birth="19900505", sex="M"), date(2024, 3, 3), 6.0, models=None)
    film = _film("20240310")
    context = case_context(film, make_result(film), settings)
    assert [c.study_date for c in context.course] == [date(2024, 3, 1)]
    [change] = context.changes
    assert change.case.study_date == date(2024, 3, 1)
    assert change.geographic_extent == make_result(film).severity.geographic_extent - 2.0
