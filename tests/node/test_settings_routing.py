"""Settings precedence and the routing rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from node import routing
from node.settings import Destination, Settings, configure, get_settings, reset


@pytest.fixture(autouse=True)
def _clean(monkeypatch):  # type: ignore[no-untyped-def]
    for key in list(__import__("os").environ):
        if key.startswith("CXR_NODE_"):
            monkeypatch.delenv(key)
    reset()
    yield
    reset()


def test_precedence_defaults_toml_env_cli(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert get_settings().port == 11112
    toml = tmp_path / "node.toml"
    toml.write_text('port = 4242\nae_title = "FROMTOML"\nallowed_calling_aets = ["A", "B"]\n')
    monkeypatch.setenv("CXR_NODE_CONFIG", str(toml))
    reset()
    s = get_settings()
    assert (s.port, s.ae_title, s.allowed_calling_aets) == (4242, "FROMTOML", ["A", "B"])
    monkeypatch.setenv("CXR_NODE_PORT", "5555")
    monkeypatch.setenv("CXR_NODE_ALLOWED_CALLING_AETS", "MOD1, MOD2")
    reset()
    assert (get_settings().port, get_settings().allowed_calling_aets) == (5555, ["MOD1", "MOD2"])
    assert configure(port=6000).port == 6000  # CLI flags win
    assert get_settings() is get_settings()  # cached


def test_destinations_and_validation(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CXR_NODE_DESTINATIONS", "ORTHANC@127.0.0.1:4242, PACS@[::1]:104")
    s = Settings()
    assert s.destinations == [
        Destination("ORTHANC", "127.0.0.1", 4242),
        Destination("PACS", "::1", 104),
    ]
    with pytest.raises(ValidationError, match="AET@host:port"):
        Settings(destinations="nonsense")
    with pytest.raises(ValidationError, match="AE title"):
        Settings(ae_title="WAY_TOO_LONG_AE_TITLE")
    with pytest.raises(ValidationError, match="ALLOWED_CALLING_AETS"):
        Settings(environment="production")
    assert Settings(environment="production", allow_any_calling_aet=True).allowed_calling_aets == []


def _ds(**attrs: str) -> Dataset:
    ds = Dataset()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    ("attrs", "eligible", "reason"),
    [
        ({}, True, None),
        ({"BodyPartExamined": ""}, True, None),
        ({"ViewPosition": "AP", "Modality": "DX"}, True, None),
        ({"Modality": "CT"}, False, "modality CT"),
        ({"BodyPartExamined": "EXTREMITY"}, False, "not the chest"),
        ({"ViewPosition": "LL"}, False, "not frontal"),
        ({"ViewPosition": "LATERAL"}, False, "not frontal"),
        ({"PatientAge": "009Y"}, False, "younger than 18"),
        ({"PatientAge": "018Y"}, True, None),
        ({"PatientAge": "006M"}, False, "younger than 18"),
        ({"PatientBirthDate": "20150101", "StudyDate": "20240101"}, False, "younger than 18"),
        ({"PatientBirthDate": "19400305", "StudyDate": "20040826"}, True, None),
        ({"PatientAge": "garbage"}, True, None),
        # raw detector values (read as a film, a linear one came out COVID-19 0.50, urgent)
        ({"PresentationIntentType": "FOR PROCESSING"}, False, "For Processing"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1.1"}, False, "For Processing"),
        ({"PresentationIntentType": "FOR PRESENTATION"}, True, None),
    ],
)
def test_routing(attrs: dict[str, str], eligible: bool, reason: str | None) -> None:
    decision = routing.decide(_ds(**attrs))
    assert decision.eligible is eligible
    if reason:
        assert decision.reason and reason in decision.reason
        assert "2015" not in decision.reason and "009" not in decision.reason  # no patient data


def test_lateral_from_view_code_sequence() -> None:
    ds = _ds(ViewPosition="")
    item = Dataset()
    item.CodeMeaning = "left lateral"
    ds.ViewCodeSequence = [item]
    assert not routing.decide(ds).eligible


def test_shipped_example_config_is_valid(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    example = Path(__file__).resolve().parents[2] / "deploy" / "cxr-node.example.toml"
    monkeypatch.setenv("CXR_NODE_CONFIG", str(example))
    s = Settings()
    assert s.environment == "production" and s.allowed_calling_aets and s.destinations
