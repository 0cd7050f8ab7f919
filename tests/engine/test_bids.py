"""Tests of the BIDS input: a BIDS dataset, a filter and a member list -> an ordinary manifest."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.bids_dataset import PREPROC, BidsCase, bids_case  # noqa: F401
from worker.engine.bids import BidsError, BidsInput, bids_manifest
from worker.engine.bids_lists import DEFAULT_FILTER, parse_bids_filter, read_id_list
from worker.engine.errors import InputError
from worker.engine.manifest import load_manifest


def copy_of(case: BidsCase, tmp_path: Path) -> BidsCase:
    """A copy of the dataset that a test may change."""
    root = tmp_path / "dataset"
    shutil.copytree(case.root, root)
    members = tmp_path / "members.txt"
    shutil.copyfile(case.members, members)
    return BidsCase(root, members, case.member_ids, case.ages)


def problems_of(spec: BidsInput, tmp_path: Path) -> list[str]:
    with pytest.raises(BidsError) as info:
        bids_manifest(spec, tmp_path / "out" / "manifest.csv")
    assert isinstance(info.value, InputError)
    return info.value.problems


def test_preprocessed_scans_become_a_manifest(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "manifest.csv"
    manifest = bids_manifest(BidsInput(bids_case.root, bids_case.members, bids_filter=PREPROC), out)
    ids = {r.scan_id for r in manifest.records}
    assert ids == set(bids_case.ages)  # 10 subjects x 2 sessions + 40 subjects
    assert len(manifest.records) == 60
    assert {r.scan_id for r in manifest.records if r.member} == bids_case.member_ids
    assert manifest.n_nonmembers == 60 - len(bids_case.member_ids) > 0
    for r in manifest.records:
        assert r.age == pytest.approx(bids_case.ages[r.scan_id])
        assert r.path.is_relative_to(bids_case.root / "derivatives" / "synthprep")
        assert "desc-preproc" in r.path.name
        assert r.attributes["sex"] in {"F", "M"} and r.attributes["site"]
        assert r.attributes["session"] == (r.scan_id.split("_")[1] if "_ses-" in r.scan_id else "")
    assert manifest.attribute_names == ["sex", "site", "session"]
    source = manifest.source
    assert source["kind"] == "bids" and source["dataset"] == "dataset"
    assert source["filter"]["desc"] == "preproc" and source["filter"]["suffix"] == "T1w"
    assert source["members_sha256"] == hashlib.sha256(bids_case.members.read_bytes()).hexdigest()
    assert source["non_members_from"] == "every other matching scan"
    assert source["subjects_in_both"] == []  # the two-session members are listed with both sessions
    # the file written is an ordinary manifest: loading it again gives the same rows and source
    again = load_manifest(out, base_dir=bids_case.root, confine=True)
    assert again.sha256 == manifest.sha256 and again.records == manifest.records and again.source == source


def test_session_age_wins_over_participants_age(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    manifest = bids_manifest(BidsInput(bids_case.root, bids_case.members, bids_filter=PREPROC), tmp_path / "m.csv")
    by_id = manifest.by_id()
    participants = {line.split("\t")[0]: line.split("\t")[1]
                    for line in (bids_case.root / "participants.tsv").read_text().splitlines()[1:]}
    # the sessions file says first-scan age + 0.5, participants.tsv the first scan's age
    assert by_id["sub-01_ses-1"].age == pytest.approx(float(participants["sub-01"]) + 0.5, abs=0.011)
    assert by_id["sub-15"].age == pytest.approx(float(participants["sub-15"]))


def test_raw_scans_by_scope(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    manifest = bids_manifest(BidsInput(bids_case.root, bids_case.members, bids_filter="scope=raw"), tmp_path / "m.csv")
    assert len(manifest.records) == 60
    assert all("derivatives" not in r.path.parts for r in manifest.records)


def test_ambiguous_scans_name_subject_files_and_entities(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    problems = problems_of(BidsInput(bids_case.root, bids_case.members), tmp_path)  # raw and derivative T1w match
    assert len(problems) == 60
    first = next(p for p in problems if p.startswith("sub-01_ses-1:"))
    assert "2 scans match" in first
    assert "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz" in first
    assert "derivatives/synthprep/sub-01/ses-1/anat/sub-01_ses-1_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz" in first
    assert "desc (none / preproc)" in first and "space (MNI152NLin2009cAsym / none)" in first
    assert "scope (derivatives/synthprep / raw)" in first


def set_age(root: Path, participant: str, age: str) -> int:
    """Set one participant's age in participants.tsv; returns its line number."""
    tsv = root / "participants.tsv"
    lines = tsv.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(participant + "\t"))
    cells = lines[index].split("\t")
    lines[index] = "\t".join([cells[0], age, *cells[2:]])
    tsv.write_text("\n".join(lines) + "\n")
    return index + 1


def test_subject_without_age(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    case = copy_of(bids_case, tmp_path)
    line = set_age(case.root, "sub-15", "n/a")
    problems = problems_of(BidsInput(case.root, case.members, bids_filter=PREPROC), tmp_path)
    assert problems == [f"sub-15: no age (participants.tsv line {line}; no age in sub-15_sessions.tsv either)"]
    set_age(case.root, "sub-15", "forty")
    problems = problems_of(BidsInput(case.root, case.members, bids_filter=PREPROC), tmp_path)
    assert problems == [f"sub-15: age 'forty' in participants.tsv line {line} is not a non-negative number of years"]


def test_session_age_rescues_a_subject_without_participant_age(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    case = copy_of(bids_case, tmp_path)
    set_age(case.root, "sub-01", "n/a")
    manifest = bids_manifest(BidsInput(case.root, case.members, bids_filter=PREPROC), tmp_path / "m.csv")
    assert manifest.by_id()["sub-01_ses-2"].age == pytest.approx(case.ages["sub-01_ses-2"])


def test_listed_ids_not_in_dataset_or_without_scan(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    case = copy_of(bids_case, tmp_path)
    for scan in (case.root / "derivatives" / "synthprep" / "sub-12").rglob("*.nii.gz"):
        scan.unlink()
    members = tmp_path / "listed.txt"
    members.write_text("sub-99\nsub-12\nsub-01_ses-7\n")
    problems = problems_of(BidsInput(case.root, members, bids_filter=PREPROC), tmp_path)
    assert problems[0].startswith("sub-99 (listed.txt line 1, members): not in the dataset")
    assert problems[1] == "sub-12 (listed.txt line 2, members): no scan matches the filter"
    assert problems[2] == "sub-01_ses-7 (listed.txt line 3, members): no such session in the dataset"


def test_second_list_of_non_members(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    members, non_members = tmp_path / "m.txt", tmp_path / "n.txt"
    members.write_text("sub-01 ses-1\n02\nsub-11\nsub-12\n")
    non_members.write_text("sub-01_ses-2\nsub-13\nsub-14\n")
    manifest = bids_manifest(BidsInput(bids_case.root, members, non_members, PREPROC), tmp_path / "m.csv")
    assert {r.scan_id: r.member for r in manifest.records} == {
        "sub-01_ses-1": True, "sub-02_ses-1": True, "sub-02_ses-2": True, "sub-11": True, "sub-12": True,
        "sub-01_ses-2": False, "sub-13": False, "sub-14": False,
    }
    assert manifest.source["non_members_sha256"] == hashlib.sha256(non_members.read_bytes()).hexdigest()
    assert manifest.source["subjects_in_both"] == ["sub-01"]
    non_members.write_text("sub-12\nsub-02_ses-2\n")
    problems = problems_of(BidsInput(bids_case.root, members, non_members, PREPROC), tmp_path)
    assert problems == ["sub-02_ses-2: listed as a member and as a non-member",
                        "sub-12: listed as a member and as a non-member"]


def test_unlisted_sessions_of_members_are_not_non_members(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    """Without a non-member list, a member subject's unlisted session is left out, not a non-member:
    the model has seen that brain, and as a non-member it would look like a member and hide leakage."""
    members = tmp_path / "m.txt"
    members.write_text("sub-01_ses-1\nsub-11\n")
    manifest = bids_manifest(BidsInput(bids_case.root, members, bids_filter=PREPROC), tmp_path / "m.csv")
    ids = {r.scan_id: r.member for r in manifest.records}
    assert ids["sub-01_ses-1"] is True and ids["sub-11"] is True
    assert "sub-01_ses-2" not in ids
    assert ids["sub-02_ses-2"] is False  # another subject's sessions stay non-members
    assert manifest.source["sessions_left_out"] == ["sub-01_ses-2"]
    assert manifest.source["subjects_in_both"] == []


def test_unknown_entity_and_missing_participants(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(InputError, match="unknown entity colour"):
        bids_manifest(BidsInput(bids_case.root, bids_case.members, bids_filter="colour=red"), tmp_path / "m.csv")
    case = copy_of(bids_case, tmp_path)
    (case.root / "participants.tsv").unlink()
    problems = problems_of(BidsInput(case.root, case.members, bids_filter=PREPROC), tmp_path)
    assert problems[0].startswith("participants.tsv not found")


def test_id_lists(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("participant_id\tsession\nsub-01\n02  # a comment\n\nsub-03_ses-2\nsub-04,ses-B\n")
    ids = read_id_list(path)
    assert [(i.line, i.subject, i.session) for i in ids.ids] == [(2, "01", None), (3, "02", None),
                                                                 (5, "03", "2"), (6, "04", "B")]
    path.write_text("sub-01\nsub-01\nsub 01 x\nsub_weird!\n")
    with pytest.raises(InputError) as info:
        read_id_list(path, "non-members")
    message = str(info.value)
    assert "3 bad line(s) in the non-members list" in message
    assert "line 2: sub-01 listed twice (also line 1)" in message
    assert "line 3: expected one ID or a subject and a session, found 3 fields" in message
    assert "line 4: 'sub_weird!' is not a subject ID" in message
    path.write_text("# nothing\n")
    with pytest.raises(InputError, match="names no subject"):
        read_id_list(path)


def test_filter_parsing() -> None:
    assert parse_bids_filter(None) == DEFAULT_FILTER
    parsed = parse_bids_filter("space=MNI152NLin2009cAsym, desc=preproc,run=1|2,extension=nii.gz")
    assert parsed == {"suffix": "T1w", "datatype": "anat", "space": "MNI152NLin2009cAsym", "desc": "preproc",
                      "run": ["1", "2"], "extension": ".nii.gz"}
    assert parse_bids_filter({"desc": ["preproc", "brain"]})["desc"] == ["preproc", "brain"]
    for bad in ("desc", "=x", "desc=", "desc=a,desc=b"):
        with pytest.raises(InputError):
            parse_bids_filter(bad)
