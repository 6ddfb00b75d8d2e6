"""Triage: a configurable rule marks a study urgent.

The rule (``triage_rule`` in the settings) is one or more conditions joined by
``or``, each ``metric >= value``::

    covid19 >= auto or extent >= 4 or extent_increase >= 2

Metrics: a class probability (``normal``, ``other_disease``, ``pneumonia``,
``covid19``), the Cohen et al. scores (``extent`` 0-8, ``opacity`` 0-6) and
their increase since the patient's previous study (``extent_increase``,
``opacity_increase``; never true without one). ``auto`` is allowed for
``covid19`` only: the classifier's threshold at 98 % sensitivity, from the
model registry. An empty rule disables triage.

Where the quality check withheld every number the rule reads (nothing lung-like, not a chest
film), there is no decision: ``assessed`` is false, and the SR codes the triage "Not
assessable" instead of routine, so a worklist sorted on it does not put a film that needs a
person's look at the bottom.

An urgent study gets an audit event, a coded finding in the SR
(:mod:`node.dicom.sr`), a banner on the SC and, when ``triage_webhook`` is
set, a JSON POST naming it by UIDs (:func:`notify`).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from dataclasses import dataclass
from typing import Any

from models.result import CLASSES, AnalysisResult, SeverityChange, Triage

logger = logging.getLogger(__name__)

SCORES = ("extent", "opacity")
INCREASES = ("extent_increase", "opacity_increase")
METRICS = (*CLASSES, *SCORES, *INCREASES)
AUTO = "auto"
_CONDITION = re.compile(r"^([a-z_0-9]+)\s*>=\s*(auto|\d+(?:\.\d+)?|\.\d+)$")


@dataclass(frozen=True)
class Condition:
    metric: str
    threshold: float | None  # None: auto

    def text(self, auto_threshold: float) -> str:
        value = auto_threshold if self.threshold is None else self.threshold
        return f"{self.metric} >= {value:g}"


def parse_rule(rule: str) -> tuple[Condition, ...]:
    """The conditions of ``rule``; ValueError naming the first one that is not understood."""
    if not rule.strip():
        return ()
    conditions = []
    for part in re.split(r"\s+or\s+", rule.strip()):
        m = _CONDITION.match(part.strip())
        if m is None:
            raise ValueError(f"triage rule: cannot read {part.strip()!r}; expected 'metric >= value'")
        metric, value = m.groups()
        if metric not in METRICS:
            raise ValueError(f"triage rule: unknown metric {metric!r}; one of {', '.join(METRICS)}")
        if value == AUTO and metric != "covid19":
            raise ValueError("triage rule: 'auto' is the COVID-19 threshold; give a number for " + metric)
        conditions.append(Condition(metric, None if value == AUTO else float(value)))
    return tuple(conditions)


def _value(metric: str, result: AnalysisResult, changes: list[SeverityChange]) -> float | None:
    # Numbers the quality check withholds (models/quality.py) never make a study urgent.
    if metric in CLASSES and result.reported_class is None:
        return None
    if metric not in CLASSES and not result.quality.assessable:
        return None
    if metric in CLASSES:
        return result.classification[metric]
    if metric == "extent":
        return result.severity.geographic_extent
    if metric == "opacity":
        return result.severity.opacity
    previous = next((c for c in changes if c.since == "previous"), None)
    if previous is None:
        return None
    return previous.geographic_extent if metric == "extent_increase" else previous.opacity


def evaluate(
    rule: str, result: AnalysisResult, changes: list[SeverityChange], auto_threshold: float
) -> Triage | None:
    """The rule's decision for one result; None when the rule is empty."""
    conditions = parse_rule(rule)
    if not conditions:
        return None
    reasons, read = [], 0
    for c in conditions:
        value = _value(c.metric, result, changes)
        threshold = auto_threshold if c.threshold is None else c.threshold
        read += value is not None
        if value is not None and value >= threshold:
            reasons.append(f"{c.metric} {value:.2f} >= {threshold:g}")
    withheld = result.reported_class is None or not result.quality.assessable
    return Triage(
        urgent=bool(reasons),
        reasons=tuple(reasons),
        rule=" or ".join(c.text(auto_threshold) for c in conditions),
        assessed=bool(read) or not withheld,
    )


def notify(url: str, payload: dict[str, Any], timeout: float = 5.0) -> None:
    """POST ``payload`` as JSON; raises OSError (URLError, HTTPError, timeout) on failure."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "cxr-node"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
        response.read()
