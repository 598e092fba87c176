import json

import pytest

from charter.files import ResumableJsonl


def test_resumable_jsonl_keeps_finished_rows_and_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "out" / "chains.jsonl"
    first = ResumableJsonl(path)
    assert first.rows == [] and path.parent.is_dir()
    first.append([{"k": 1}, {"k": 2}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"k": 3')  # killed mid-write

    again = ResumableJsonl(path)
    assert again.keys("k") == {1, 2}
    again.append([{"k": 3}])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["k"] for line in lines] == [1, 2, 3]


def test_resumable_jsonl_names_the_line_of_a_corrupt_row(tmp_path):
    path = tmp_path / "chains.jsonl"
    path.write_text('{"k": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"chains.jsonl:2: invalid JSON"):
        ResumableJsonl(path)
