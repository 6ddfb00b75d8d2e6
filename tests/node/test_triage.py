"""The triage rule: parsing, decisions, the settings check and the webhook."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest

from models.result import AnalysisResult, LungSeverity, PriorCase, Quality, Severity, SeverityChange
from node import settings as node_settings
from node.triage import evaluate, notify, parse_rule


def result(covid: float = 0.01, extent: float = 1.0, opacity: float = 1.0) -> AnalysisResult:
    rest = (1.0 - covid) / 3
    empty = np.zeros((4, 4), bool)
    half = LungSeverity(extent / 2, opacity / 2)
    return AnalysisResult(
        classification={"normal": rest, "other_disease": rest, "pneumonia": rest, "covid19": covid},
        severity=Severity(extent, opacity, half, half),
        right_lung=empty,
        left_lung=empty,
        heatmap=np.zeros((4, 4), np.float32),
        image=np.zeros((4, 4), np.uint8),
        models={},
    )


def change(extent: float) -> SeverityChange:
    case = PriorCase("1.2", "1.2.840.10008.5.1.4.1.1.1.1", "1.3", "1.4", None, "covid19", 1.0, 1.0)
    return SeverityChange("previous", case, 3, extent, 0.0)


def test_rule_parses_and_rejects_with_a_clear_message() -> None:
    assert parse_rule("") == ()
    assert [c.metric for c in parse_rule("covid19 >= auto or extent>=4 or extent_increase >= 1.5")] == [
        "covid19",
        "extent",
        "extent_increase",
    ]
    with pytest.raises(ValueError, match="unknown metric 'age'"):
        parse_rule("age >= 80")
    with pytest.raises(ValueError, match="'auto' is the COVID-19 threshold"):
        parse_rule("extent >= auto")
    with pytest.raises(ValueError, match="cannot read 'extent > 4'"):
        parse_rule("extent > 4")


def test_settings_refuse_a_bad_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    node_settings.reset()
    monkeypatch.setenv("CXR_NODE_TRIAGE_RULE", "covid19 >= maybe")
    with pytest.raises(ValueError, match="cannot read 'covid19 >= maybe'"):
        node_settings.get_settings()
    node_settings.reset()


def test_decisions() -> None:
    rule = "covid19 >= auto or extent >= 4 or extent_increase >= 2"
    assert not evaluate(rule, result(covid=0.05), [], 0.076).urgent  # type: ignore[union-attr]
    urgent = evaluate(rule, result(covid=0.08), [], 0.076)
    assert urgent is not None and urgent.urgent and urgent.reasons == ("covid19 0.08 >= 0.076",)
    assert urgent.rule == "covid19 >= 0.076 or extent >= 4 or extent_increase >= 2"
    assert evaluate(rule, result(extent=4.0), [], 0.076).urgent  # type: ignore[union-attr]
    # Worse by 2 since the previous study; never without one.
    assert evaluate(rule, result(extent=3.0), [change(2.5)], 0.076).urgent  # type: ignore[union-attr]
    assert not evaluate(rule, result(extent=3.0), [change(1.0)], 0.076).urgent  # type: ignore[union-attr]
    assert evaluate("", result(covid=1.0), [], 0.076) is None


def test_webhook_posts_json() -> None:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        notify(f"http://127.0.0.1:{server.server_port}/hook", {"event": "x", "sop_instance_uid": "1.2"})
    finally:
        server.shutdown()
    assert received == [{"event": "x", "sop_instance_uid": "1.2"}]
    with pytest.raises(OSError):
        notify(f"http://127.0.0.1:{server.server_port}/hook", {}, timeout=2)  # nobody listens now


@pytest.mark.parametrize(
    ("quality", "sent"),
    [
        (Quality(), {"predicted_class", "covid19_probability", "geographic_extent", "opacity"}),
        (Quality(assessable=False, reasons=("shape",)), {"predicted_class", "covid19_probability"}),
        (Quality(assessable=False, lungs_found=False, reasons=("no_lungs",)), set()),
    ],
)
def test_webhook_carries_only_what_was_not_withheld(
    quality: Quality, sent: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import pipeline

    posted: list[dict[str, Any]] = []
    monkeypatch.setattr(pipeline.triage, "notify", lambda url, payload: posted.append(payload))
    monkeypatch.setattr(pipeline.audit, "record", lambda *args, **kwargs: True)
    decision = evaluate("covid19 >= auto", result(covid=0.5), [], 0.076)
    assert decision is not None
    uids = {"study_instance_uid": "1.2", "series_instance_uid": "1.3", "sop_instance_uid": "1.4"}
    pipeline._notify_urgent(
        "http://hook", decision, replace(result(covid=0.5, extent=6.0), quality=quality), uids
    )  # type: ignore[arg-type]
    scores = {"predicted_class", "covid19_probability", "geographic_extent", "opacity"}
    assert set(posted[0]) & scores == sent


@pytest.mark.parametrize("url", ["notaurl", "http://", "http://exa mple.org/hook"])
def test_a_webhook_url_urllib_cannot_use_is_an_audited_failure(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """urllib raises ValueError for a URL it cannot use; the task died with it, after the
    study was marked urgent, and no triage.notified row said the webhook was never called."""
    from workers import pipeline

    rows: list[tuple[Any, ...]] = []
    monkeypatch.setattr(pipeline.audit, "record", lambda *args, **kwargs: rows.append(args) or True)
    decision = evaluate("covid19 >= auto", result(covid=0.5), [], 0.076)
    assert decision is not None
    uids = {"study_instance_uid": "1.2", "series_instance_uid": "1.3", "sop_instance_uid": "1.4"}
    pipeline._notify_urgent(url, decision, result(covid=0.5), uids)  # type: ignore[arg-type]
    (kind, outcome, message), *_ = rows
    assert (str(kind), str(outcome)) == ("triage.notified", "failure") and message.startswith("webhook: ")
