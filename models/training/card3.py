"""Markdown tables of the round-3 report (``report.json`` of :mod:`models.training.round3`),
beside round 2's numbers and the goals, for the classification card and the README.

    python -m models.training.card3 DIR/report.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Round 2 (crop-classifier@2.0.0, models/cards/classification.md at that version): leave-one-source-out
# over the four sources it had; COVID-19 could not be held out by source then.
ROUND2_LOSO = {
    "cxr": "normal 0.564, other 0.291, pneumonia 0.615 (1-vs-rest)",
    "nih": "normal 0.536 (1-vs-rest)",
    "montgomery": "normal 0.798 (1-vs-rest)",
    "shenzhen": "normal 0.691 (1-vs-rest)",
}
NAMES = {
    "cxr": "cxr-collection",
    "covid-radiography": "covid-radiography",
    "hannover": "hannover",
    "covid-cxnet": "covid-cxnet",
    "nih": "NIH",
    "montgomery": "Montgomery",
    "shenzhen": "Shenzhen",
}


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _goal(v: Any, goal: float, higher: bool = True) -> str:
    if v is None:
        return "–"
    ok = v >= goal if higher else v <= goal
    return f"{v:.3f}" + ("" if ok else " **short**")


def loso_table(rep: dict[str, Any]) -> str:
    rows = [
        "| held-out source | n | COVID-19 vs every out-of-source normal (goal >= 0.90) "
        "| COVID-19 vs own normals "
        "| abnormal vs own normals (goal >= 0.90) | extent alone: COVID-19 vs normals / abnormal vs normal "
        "| round 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, r in rep["leave_one_source_out"].items():
        e = rep["extent_only"][s]
        rows.append(
            f"| {NAMES[s]} | {r['n']} | {_goal(r.get('covid19_vs_all_normals'), 0.9)} "
            f"| {_f(r.get('covid19_vs_own_normals'))} | {_goal(r.get('abnormal_vs_normal'), 0.9)} "
            f"| {_f(e.get('covid19_vs_all_normals'))} / {_f(e.get('abnormal_vs_normal'))} "
            f"| {ROUND2_LOSO.get(s, 'not held out (no such source)')} |"
        )
    return "\n".join(rows)


def triage_table(rep: dict[str, Any]) -> str:
    """Per held-out source: the default rule's urgent shares against the goals, and beside them
    the same films under its extent part alone (``extent >= 4``: a rule with no class in it)."""
    rows = [
        "| held-out source | auto fitted without it | COVID-19 urgent (goal >= 95 %) "
        "| normals urgent (goal <= 20 %) | `extent >= 4` alone: COVID-19 / normals urgent |",
        "|---|---|---|---|---|",
    ]

    def share(r: dict[str, Any] | None) -> str:
        return "–" if r is None else f"{100 * r['by_extent']:.1f} %"

    for s, r in rep["triage"].items():
        cov, nor = r.get("covid19"), r.get("normal")
        c = (
            "–"
            if cov is None
            else f"{100 * cov['urgent']:.1f} % of {cov['n']}" + (" **short**" if cov["urgent"] < 0.95 else "")
        )
        n = (
            "–"
            if nor is None
            else f"{100 * nor['urgent']:.1f} % of {nor['n']}" + (" **short**" if nor["urgent"] > 0.2 else "")
        )
        rows.append(f"| {NAMES[s]} | {r['auto_threshold']:.3f} | {c} | {n} | {share(cov)} / {share(nor)} |")
    return "\n".join(rows)


def quality_table(rep: dict[str, Any]) -> str:
    rows = [
        "| source | class | n | not assessable | nothing lung-like | reasons |",
        "|---|---|---|---|---|---|",
    ]
    for s, r in rep["quality"].items():
        if s == "all_normals":
            continue
        for c, v in r.items():
            reasons = ", ".join(f"{k} {n}" for k, n in sorted(v["reasons"].items(), key=lambda kv: -kv[1]))
            rows.append(
                f"| {NAMES[s]} | {c} | {v['n']} | {100 * v['not_assessable']:.1f} % "
                f"| {100 * v['nothing_found']:.1f} % | {reasons} |"
            )
    return "\n".join(rows)


def main(path: Path) -> str:
    rep = json.loads(Path(path).read_text())
    probe = rep["source_probe"]["classifier_inputs_and_outputs"]
    parts = [
        loso_table(rep),
        "",
        "Source probe (7 sources, patient-grouped 5-fold CV, balanced accuracy; goal <= 0.40; "
        "round 2: 0.831 "
        f"of 4 sources, linear on the embedding): linear {probe['linear']:.3f}, boosted trees "
        f"{probe['boosted_trees']:.3f} (chance {probe['chance']:.3f}).",
        "",
        triage_table(rep),
        "",
        quality_table(rep),
        "",
        f"All normals: QC false alarm {100 * rep['quality']['all_normals']['false_alarm']:.1f} % of "
        f"{rep['quality']['all_normals']['n']}.",
        f"Heat: {json.dumps(rep.get('heat'))}",
        f"Hannover ICU: {json.dumps(rep.get('hannover_icu'))}",
        f"Accuracy {rep['accuracy_out_of_source']}, ECE {rep['ece_out_of_source']}, T {rep['temperature']}, "
        f"auto {rep['auto_threshold']}, confusion {rep['confusion_out_of_source']}",
        f"Groups: {rep['groups']}",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
