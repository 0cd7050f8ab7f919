"""Tests of manifest parsing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.conftest_scans import real_t1_dir  # noqa: F401  (fixture)
from worker.engine.errors import InputError, ManifestError, RowError
from worker.engine.manifest import Manifest, ScanRecord, load_manifest, parse_member


def write(tmp_path: Path, text: str, name: str = "manifest.csv", *, files: tuple[str, ...] = ()) -> Path:
    """Write a manifest (and empty scan files) into tmp_path."""
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path, **kwargs) -> list[RowError]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, **kwargs)
    err = info.value
    assert isinstance(err, InputError)
    assert err.path == path.resolve()
    assert str(path.resolve()) in str(err)
    return err.errors


def find(errors: list[RowError], line: int, column: str | None = None) -> RowError:
    hits = [e for e in errors if e.line == line and (column is None or e.column == column)]
    assert hits, f"no error on line {line} column {column}: {errors}"
    return hits[0]


GOOD = "scan_id,path,age,member,sex,site\ns1,a.nii.gz,50.5,1,F,x\ns2,b.nii.gz,60,0,M,y\ns3,sub/c.nii,70,member,F,x\n"


def test_good_manifest(tmp_path):
    path = write(tmp_path, GOOD, files=("a.nii.gz", "b.nii.gz", "sub/c.nii"))
    m = load_manifest(path)
    assert isinstance(m, Manifest)
    assert [r.scan_id for r in m.records] == ["s1", "s2", "s3"]
    assert m.n_members == 2 and m.n_nonmembers == 1
    assert m.attribute_names == ["sex", "site"]
    r = m.by_id()["s3"]
    assert isinstance(r, ScanRecord)
    assert r.path == (tmp_path / "sub" / "c.nii").resolve() and r.path.is_absolute()
    assert r.age == 70.0 and r.member is True and r.line == 4 and r.learner is None
    assert dict(r.attributes) == {"sex": "F", "site": "x"}
    assert len(m.sha256) == 64
    assert m.path == path.resolve()
    assert hash(r)  # records are hashable despite the attributes mapping


def test_sha256_is_of_file_bytes(tmp_path):
    import hashlib

    path = write(tmp_path, GOOD, files=("a.nii.gz", "b.nii.gz", "sub/c.nii"))
    assert load_manifest(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_learner_and_attributes_keep_original_names(tmp_path):
    text = "Scan_ID,Path,AGE,Member,Learner,Scanner Model,sex\ns1,a.nii,40,1,L1,Prisma,F\ns2,b.nii,41,0,,Trio,M\n"
    m = load_manifest(write(tmp_path, text), check_files=False)
    assert m.attribute_names == ["Scanner Model", "sex"]
    assert m.records[0].learner == "L1" and m.records[1].learner is None
    assert m.records[1].attributes == {"Scanner Model": "Trio", "sex": "M"}


def test_bom_whitespace_blank_lines_crlf(tmp_path):
    text = "\ufeff scan_id , path , age , member \r\n s1 , a.nii , 50 , Yes \r\n\r\ns2,b.nii,51,No\r\n\r\n\r\n"
    path = tmp_path / "m.csv"
    path.write_bytes(text.encode("utf-8"))
    m = load_manifest(path, check_files=False)
    assert [(r.scan_id, r.age, r.member, r.line) for r in m.records] == [("s1", 50.0, True, 2), ("s2", 51.0, False, 4)]
    assert m.records[0].path == (tmp_path / "a.nii").resolve()


def test_quoted_fields_and_trailing_empty_columns(tmp_path):
    text = 'scan_id,path,age,member,\n"s,1","dir with space/a.nii",50,1,\ns2,b.nii,51,0\n'
    m = load_manifest(write(tmp_path, text), check_files=False)
    assert m.records[0].scan_id == "s,1"
    assert m.records[0].path.name == "a.nii" and m.records[0].path.parent.name == "dir with space"


def test_base_dir_and_absolute_paths(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.nii").write_bytes(b"")
    abs_file = tmp_path / "elsewhere.nii"
    abs_file.write_bytes(b"")
    text = f"scan_id,path,age,member\ns1,a.nii,50,1\ns2,{abs_file},51,0\n"
    m = load_manifest(write(tmp_path, text), base_dir=data)
    assert m.records[0].path == (data / "a.nii").resolve()
    assert m.records[1].path == abs_file.resolve()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1", True), ("0", False), ("true", True), ("false", False), ("TRUE", True), ("False", False),
        ("yes", True), ("no", False), ("Yes", True), ("NO", False),
        ("member", True), ("Member", True), ("non-member", False), ("Non-Member", False),
        ("non_member", False), ("nonmember", False), ("NONMEMBER", False), ("  member \t", True), (" 0 ", False),
    ],
)
def test_parse_member_spellings(value, expected):
    assert parse_member(value) is expected


@pytest.mark.parametrize("value", ["", "2", "maybe", "1.0", "y", "n", "members", "non member", "-1"])
def test_parse_member_rejects(value):
    with pytest.raises(ValueError):
        parse_member(value)


def test_every_member_spelling_in_a_file(tmp_path):
    spellings = ["1", "0", "true", "false", "yes", "no", "member", "non-member", "non_member", "nonmember", "TRUE", "No"]
    rows = "".join(f"s{i},f{i}.nii,{30 + i},{v}\n" for i, v in enumerate(spellings))
    m = load_manifest(write(tmp_path, "scan_id,path,age,member\n" + rows), check_files=False)
    assert [r.member for r in m.records] == [parse_member(v) for v in spellings]


def test_missing_required_columns(tmp_path):
    errs = errors_of(write(tmp_path, "scan_id,file,age\ns1,a.nii,50\n"), check_files=False)
    assert {(e.line, e.column) for e in errs} == {(1, "path"), (1, "member")}
    assert "missing required column 'path'" in str(find(errs, 1, "path"))


def test_duplicate_column_name(tmp_path):
    errs = errors_of(write(tmp_path, "scan_id,path,age,member,age\ns1,a.nii,50,1,3\n"), check_files=False)
    assert find(errs, 1, "age")


def test_empty_file(tmp_path):
    errs = errors_of(write(tmp_path, ""))
    assert errs[0].line == 1 and "empty" in errs[0].reason


def test_blank_only_file(tmp_path):
    errs = errors_of(write(tmp_path, "\n\n  \n"))
    assert errs[0].line == 1 and "empty" in errs[0].reason


def test_header_only(tmp_path):
    errs = errors_of(write(tmp_path, "scan_id,path,age,member\n\n"))
    assert errs == [RowError(1, None, "no rows: the manifest lists no scans")]


def test_all_row_errors_collected_with_lines(tmp_path):
    text = (
        "scan_id,path,age,member\n"  # 1
        "s1,a.nii,50,1\n"  # 2 ok
        "s1,b.nii,51,0\n"  # 3 duplicate id
        "s3,c.nii,abc,1\n"  # 4 non-numeric age
        "s4,d.nii,,0\n"  # 5 missing age
        "s5,e.nii,52,maybe\n"  # 6 unknown membership
        "s6,missing.nii,53,1\n"  # 7 missing file
        "s7,f.nii,54\n"  # 8 too few fields
        "s8,g.nii,55,1,extra\n"  # 9 too many fields
        "s9,h.nii,-3,1\n"  # 10 negative age
        "s10,i.nii,nan,0\n"  # 11 non-finite age
        ",j.nii,20,1\n"  # 12 missing scan_id
        "s12,,20,1\n"  # 13 missing path
        "s13,k.nii,20,\n"  # 14 missing membership
        "s14,l.nii,inf,1\n"  # 15 infinite age
    )
    files = ("a.nii", "b.nii", "c.nii", "d.nii", "e.nii", "f.nii", "g.nii", "h.nii", "i.nii", "j.nii", "k.nii", "l.nii")
    path = write(tmp_path, text, files=files)
    errs = errors_of(path)
    assert "duplicate scan_id 's1' (first on line 2)" in find(errs, 3, "scan_id").reason
    assert "'abc' is not a number" in find(errs, 4, "age").reason
    assert "missing age" in find(errs, 5, "age").reason
    assert "'maybe'" in find(errs, 6, "member").reason
    missing = find(errs, 7, "path").reason
    assert "file not found" in missing and str((tmp_path / "missing.nii").resolve()) in missing
    assert "expected 4 fields, found 3" in find(errs, 8).reason
    assert "expected 4 fields, found 5" in find(errs, 9).reason
    assert "negative" in find(errs, 10, "age").reason
    assert "not finite" in find(errs, 11, "age").reason
    assert "missing scan_id" in find(errs, 12, "scan_id").reason
    assert "missing path" in find(errs, 13, "path").reason
    assert "missing membership" in find(errs, 14, "member").reason
    assert "not finite" in find(errs, 15, "age").reason
    assert not [e for e in errs if e.line == 2]
    assert [e.line for e in errs] == sorted(e.line for e in errs)
    # the message lists every error with its line and column
    with pytest.raises(ManifestError, match=r"line 6, column 'member': unknown membership value 'maybe'"):
        load_manifest(path)


def test_same_file_member_and_nonmember(tmp_path):
    text = "scan_id,path,age,member\ns1,a.nii,50,1\ns2,b.nii,50,1\ns3,./a.nii,50,0\n"
    errs = errors_of(write(tmp_path, text, files=("a.nii", "b.nii")))
    assert len(errs) == 1
    e = errs[0]
    assert e.line == 4 and e.column == "member"
    assert "scan listed as member and non-member" in e.reason and "lines 2 and 4" in e.reason


def test_same_file_twice_same_membership_is_allowed(tmp_path):
    text = "scan_id,path,age,member\ns1,a.nii,50,1\ns2,a.nii,50,1\n"
    assert len(load_manifest(write(tmp_path, text, files=("a.nii",))).records) == 2


def test_check_files_off(tmp_path):
    m = load_manifest(write(tmp_path, "scan_id,path,age,member\ns1,nowhere.nii,50,1\n"), check_files=False)
    assert m.records[0].path == (tmp_path / "nowhere.nii").resolve()


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.nii").mkdir()
    errs = errors_of(write(tmp_path, "scan_id,path,age,member\ns1,d.nii,50,1\n"))
    assert "not a file" in find(errs, 2, "path").reason


def test_member_optional(tmp_path):
    path = write(tmp_path, "scan_id,path,age,member\ns1,a.nii,50,\ns2,b.nii,50,0\n")
    errs = errors_of(path, check_files=False)
    assert find(errs, 2, "member")
    m = load_manifest(path, check_files=False, require_member=False)
    assert [r.member for r in m.records] == [None, False]
    assert m.n_members == 0 and m.n_nonmembers == 1
    # the column itself stays required
    errs = errors_of(write(tmp_path, "scan_id,path,age\ns1,a.nii,50\n", "m2.csv"), check_files=False, require_member=False)
    assert find(errs, 1, "member")


def test_unnamed_column_with_value(tmp_path):
    errs = errors_of(write(tmp_path, "scan_id,,path,age,member\ns1,x,a.nii,50,1\n"), check_files=False)
    assert "no name" in find(errs, 2).reason


def test_not_utf8(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"scan_id,path,age,member\ns1,a.nii,50,1\ns\xe9,b.nii,50,0\n")
    errs = errors_of(path, check_files=False)
    assert errs[0].line == 3 and "UTF-8" in errs[0].reason


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match="cannot read file"):
        load_manifest(tmp_path / "absent.csv")


def test_many_errors_message_truncated(tmp_path):
    rows = "".join(f"s{i},a.nii,x,1\n" for i in range(80))
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, "scan_id,path,age,member\n" + rows), check_files=False)
    assert len(info.value.errors) == 80
    assert "and 30 more" in str(info.value)


def test_real_manifest(real_t1_dir):  # noqa: F811
    m = load_manifest(real_t1_dir / "manifest.csv")
    assert len(m.records) == 4 and m.n_members == 2 and m.n_nonmembers == 2
    assert all(r.path.is_file() and r.path.parent == real_t1_dir for r in m.records)
    assert m.by_id()["subject1"].age == pytest.approx(57.75)


def test_confine_to_base_dir(tmp_path):
    base = tmp_path / "upload"
    base.mkdir()
    (base / "a.nii").write_bytes(b"")
    (tmp_path / "secret.nii").write_bytes(b"")
    (base / "link.nii").symlink_to(tmp_path / "secret.nii")
    text = f"scan_id,path,age,member\ns1,a.nii,50,1\ns2,../secret.nii,50,0\ns3,{tmp_path / 'secret.nii'},50,0\ns4,link.nii,50,0\n"
    path = write(base, text)
    assert len(load_manifest(path).records) == 4  # allowed by default
    errs = errors_of(path, confine=True)
    assert [(e.line, e.column) for e in errs] == [(3, "path"), (4, "path"), (5, "path")]
    assert "outside the folder" in errs[0].reason
