"""docs/conformance.md says what the code does: its generated tables and the IODs built."""

from __future__ import annotations

from pydicom.dataset import Dataset

from models.result import AnalysisResult
from node.conformance import DOC, OUTPUT_SOP_CLASSES, OUTPUT_TRANSFER_SYNTAX, stale_blocks
from node.dicom.outputs import build_outputs
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result


def test_generated_tables_match_the_code() -> None:
    stale = stale_blocks(DOC.read_text())
    assert not stale, f"{DOC} is out of date in {stale}: run `python -m node.conformance`"


def test_outputs_are_the_sop_classes_the_statement_lists(dx_source: Dataset) -> None:
    result: AnalysisResult = make_result(dx_source)
    outputs = build_outputs(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)
    assert set(outputs) == set(OUTPUT_SOP_CLASSES)
    for kind, ds in outputs.items():
        assert ds.SOPClassUID == OUTPUT_SOP_CLASSES[kind][0], kind
        assert ds.file_meta.TransferSyntaxUID == OUTPUT_TRANSFER_SYNTAX, kind
    [template] = outputs["sr"].ContentTemplateSequence
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "1500")
    assert "TID 1500" in DOC.read_text()
