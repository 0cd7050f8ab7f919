"""A small BIDS dataset written from the tiny synthetic cohort, for the BIDS tests of the engine,
the command line and the API.

Layout: ``participants.tsv`` (``participant_id``, ``age``, ``sex``, ``site``); subjects 01-10 have
two sessions (``ses-1``, ``ses-2``, ages in ``sub-XX_sessions.tsv``), subjects 11-50 one scan and no
session; every scan once raw (``sub-XX/[ses-Y/]anat/..._T1w.nii.gz``) and once preprocessed
(``derivatives/synthprep/...space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz``). The member list
names the subjects whose first scan is a member of the cohort (some as ``sub-XX``, some as
``XX``, the two-session ones by subject and session in two columns).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.engine.manifest import load_manifest

PREPROC = "space=MNI152NLin2009cAsym,desc=preproc"
N_TWO_SESSIONS = 10


@dataclass(frozen=True)
class BidsCase:
    """A written dataset: its folder, its member list, and the expected scan ids and ages."""

    root: Path
    members: Path
    member_ids: frozenset[str]
    ages: dict[str, float]


def _copy(scan: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scan, dest)


def write_bids_dataset(cohort_manifest: Path, root: Path) -> BidsCase:
    """Write the dataset from a (60-scan) synthetic cohort; returns what the tests expect of it."""
    records = load_manifest(cohort_manifest).records
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.9.0"}))
    deriv = root / "derivatives" / "synthprep"
    deriv.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "synthprep", "BIDSVersion": "1.9.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "synth"}]}
    ))
    participants = ["participant_id\tage\tsex\tsite"]
    member_lines = ["participant_id"]
    member_ids: set[str] = set()
    ages: dict[str, float] = {}
    subject_scans: list[list] = [records[2 * i : 2 * i + 2] for i in range(N_TWO_SESSIONS)]
    subject_scans += [[r] for r in records[2 * N_TWO_SESSIONS :]]
    for number, scans in enumerate(subject_scans, start=1):
        sub = f"sub-{number:02d}"
        first = scans[0]
        participants.append(f"{sub}\t{first.age:.2f}\t{first.attributes['sex']}\t{first.attributes['site']}")
        if len(scans) == 2:
            sessions = ["session_id\tage"]
            for ses, rec in enumerate(scans, start=1):
                name = f"{sub}_ses-{ses}"
                _copy(rec.path, root / sub / f"ses-{ses}" / "anat" / f"{name}_T1w.nii.gz")
                _copy(rec.path, deriv / sub / f"ses-{ses}" / "anat"
                      / f"{name}_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")
                sessions.append(f"ses-{ses}\t{rec.age + 0.5:.2f}")
                ages[name] = round(rec.age + 0.5, 2)
                if first.member:
                    member_lines.append(f"{sub}\tses-{ses}")
                    member_ids.add(name)
            (root / sub / f"{sub}_sessions.tsv").write_text("\n".join(sessions) + "\n")
        else:
            _copy(first.path, root / sub / "anat" / f"{sub}_T1w.nii.gz")
            _copy(first.path, deriv / sub / "anat" / f"{sub}_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")
            ages[sub] = round(first.age, 2)
            if first.member:
                member_lines.append(sub if number % 2 else f"{number:02d}")
                member_ids.add(sub)
    (root / "participants.tsv").write_text("\n".join(participants) + "\n")
    members = root.parent / "members.txt"
    members.write_text("\n".join(member_lines) + "\n")
    return BidsCase(root=root, members=members, member_ids=frozenset(member_ids), ages=ages)


@pytest.fixture(scope="session")
def bids_case(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> BidsCase:
    """The BIDS dataset of the tiny cohort (do not change it: copy it first)."""
    return write_bids_dataset(tiny_cohort, tmp_path_factory.mktemp("bids") / "dataset")
