"""The report's provenance names a BIDS dataset, its filter and the member lists when the manifest
was derived from one (and adds nothing for a manifest written by hand)."""

from __future__ import annotations

import copy

from frontend.report_html import render_report_html
from frontend.report_view.provenance import provenance_view
from tests.frontend.sample_report import make_sample

SOURCE = {
    "kind": "bids", "dataset": "ds-brains",
    "filter": {"datatype": "anat", "desc": "preproc", "extension": [".nii", ".nii.gz"], "suffix": "T1w"},
    "members_file": "train.txt", "members_sha256": "ab" * 32, "non_members_file": None,
    "non_members_sha256": None, "non_members_from": "every other matching scan", "subjects_in_both": ["sub-07"],
}


def test_bids_source_rows() -> None:
    report, features = make_sample(60, white_box=False, errored=False, calibrated=False)
    plain = dict(provenance_view(report)["manifest"])
    assert "Derived from" not in plain
    report = copy.deepcopy(report)
    report["provenance"]["manifest"]["source"] = SOURCE
    rows = dict(provenance_view(report)["manifest"])
    assert rows["Derived from"] == "BIDS dataset ds-brains"
    assert rows["BIDS filter"] == "datatype=anat,desc=preproc,extension=.nii|.nii.gz,suffix=T1w"
    assert rows["Member list"] == f"train.txt (SHA-256 {'ab' * 32})"
    assert rows["Non-members"] == "every other matching scan"
    assert rows["Subjects on both sides"] == "sub-07"
    html = render_report_html(report, features)
    assert "BIDS dataset ds-brains" in html and "desc=preproc" in html
