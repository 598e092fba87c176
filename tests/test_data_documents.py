"""Reading the user's own files as documents; malformed lines named by file and line."""

from __future__ import annotations

import pytest

from charter.data.documents import Document, read_documents, write_documents


def test_text_markdown_and_directories(tmp_path):
    (tmp_path / "one.txt").write_text("First.\n")
    corpus = tmp_path / "my-notes"
    (corpus / "deep").mkdir(parents=True)
    (corpus / "a.md").write_text("# A\n")
    (corpus / "deep/b.txt").write_text("B ü\n")
    (corpus / "ignored.py").write_text("x = 1\n")
    documents = list(read_documents([tmp_path / "one.txt", corpus]))
    assert documents == [
        Document("First.\n", "one"),
        Document("# A\n", "my-notes"),  # files in a directory take its name as their source
        Document("B ü\n", "my-notes"),
    ]


def test_jsonl_fields_and_defaults(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "a", "source": "s", "licence": "MIT"}\n\n{"text": "b", "extra": 1}\n')
    assert list(read_documents([path])) == [Document("a", "s", "MIT"), Document("b", "corpus")]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["x", "y"], "licence": ["CC0-1.0", "MIT"]}), path)
    assert list(read_documents([path])) == [
        Document("x", "t", "CC0-1.0"),
        Document("y", "t", "MIT"),
    ]
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(ValueError, match=r"t\.parquet: no 'text' column \(columns: \['body'\]\)"):
        list(read_documents([path]))
    pq.write_table(pa.table({"text": ["x", None]}), path)
    with pytest.raises(
        ValueError, match=r"t\.parquet: row 1: 'text' must be a string, got NoneType"
    ):
        list(read_documents([path]))


def test_malformed_lines_raise_or_are_collected(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"text": "good"}\n'
        b"[1, 2]\n"
        b'{"text": "bad \xff byte"}\n'
        b'{"text": "also good", "licence": ["MIT"]}\n'
        b'{"text": "last good"}\n'
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected a JSON object, got list"):
        list(read_documents([path]))
    errors: list[str] = []
    documents = list(read_documents([path], errors))
    assert [d.text for d in documents] == ["good", "last good"]
    assert errors == [
        f"{path}:2: expected a JSON object, got list",
        f"{path}:3: not UTF-8 (byte 14: invalid start byte)",
        f"{path}:4: 'licence' must be a string, got list",
    ]


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt: no such file or directory"):
        list(read_documents([tmp_path / "nothing.txt"]))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported file type '\.csv'"):
        list(read_documents([tmp_path / "data.csv"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no .* files in directory"):
        list(read_documents([tmp_path / "empty"]))
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match=r"latin1\.txt: not UTF-8 \(byte 3"):
        list(read_documents([tmp_path / "latin1.txt"]))


def test_write_documents_round_trips(tmp_path):
    documents = [Document("ü\nline", "s", "MIT"), Document('"quoted"', "t")]
    path = tmp_path / "out/docs.jsonl"
    assert write_documents(documents, path) == (2, len("ü\nline".encode()) + len('"quoted"'))
    assert list(read_documents([path])) == documents
    assert [p.name for p in path.parent.iterdir()] == ["docs.jsonl"]


def test_write_documents_leaves_no_partial_file(tmp_path):
    def failing():
        yield Document("one", "s")
        raise RuntimeError("source broke")

    path = tmp_path / "docs.jsonl"
    with pytest.raises(RuntimeError, match="source broke"):
        write_documents(failing(), path)
    assert list(tmp_path.iterdir()) == []
