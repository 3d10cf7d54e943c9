"""Paper records as JSON, and files written atomically with ordinary permissions."""

from __future__ import annotations

import json
import os

from chatgentitle.data.records import ArxivRecord, atomic_path


def test_a_crawled_record_keeps_every_field_in_json():
    record = ArxivRecord(id="2501.00001", title="A title", abstract="An abstract.", categories="cs.CL",
                         version=2, authors="A. Author")
    row = json.loads(record.to_json())
    assert (row["id"], row["title"], row["abstract"], row["version"], row["authors"]) == (
        "2501.00001", "A title", "An abstract.", 2, "A. Author")


def test_atomic_files_get_the_umasks_permissions_and_leave_the_umask_alone(tmp_path):
    before = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "out.jsonl") as tmp:
            tmp.write_text("{}\n")
        assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o640
        assert os.umask(0o027) == 0o027  # untouched by the write
        assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    finally:
        os.umask(before)
