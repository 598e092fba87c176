import json

import pytest

from charter.files import ResumableJsonl, batches, write_scored_jsonl


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


def test_batches_split_items_and_refuse_a_size_below_one_at_once():
    assert list(batches(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(batches([], 3)) == []
    with pytest.raises(ValueError, match="batch size must be ≥ 1, got 0"):
        batches(range(5), 0)  # before anything is iterated


def test_scored_rows_are_written_with_their_scores_batch_by_batch(tmp_path):
    calls = []

    def score(items):
        calls.append(list(items))
        return [2 * item for item in items]

    rows = [({"id": i}, i) for i in range(5)]
    out = tmp_path / "sub" / "scored.jsonl"
    assert write_scored_jsonl(rows, out, "double", score, batch_size=2) == 5
    assert calls == [[0, 1], [2, 3], [4]]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"id": i, "double": 2 * i} for i in range(5)]
    with pytest.raises(ValueError, match="batch size must be ≥ 1"):
        write_scored_jsonl(rows, tmp_path / "none.jsonl", "double", score, batch_size=0)
    assert not (tmp_path / "none.jsonl").exists()
