"""A run's stanzas merged as Splunk merges them, on disk instead of in memory.

A stanza seen twice in a file is one stanza, its keys keeping their last values, at the
place of its first appearance. Merging in memory holds every stanza of every file until
the end: 19 MB of .conf text took 770 MiB. So each stanza goes, as the parser ends it,
into a private temporary SQLite database (SQLite removes it when the connection closes
and keeps no more than its page cache, about 2 MiB, in memory), is merged there with
``json_patch`` (for string values, the same as ``dict.update``), and is read back in
batches of bounded size.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from app.workloads.ingest.conf_parser import MAX_STANZA, ConfError, Stanza

#: Most rows, and most characters of settings, read back at once.
BATCH_ROWS = 1000
BATCH_CHARS = 16 * 1024 * 1024

_UPSERT = """
    INSERT INTO stanza (path, name, line, settings) VALUES (?, ?, ?, ?)
    ON CONFLICT (path, name) DO UPDATE SET settings = json_patch(settings, excluded.settings)
"""


class MergedStanza(NamedTuple):
    path: str
    name: str
    line: int
    settings: dict[str, str]


class MergedStanzas:
    """The stanzas of a run's files, merged, in order of first appearance."""

    def __init__(self) -> None:
        # An empty name: a private temporary database on disk, removed when closed.
        self._db = sqlite3.connect("")
        # A merged stanza is held to the parser's limit too: its settings are read back
        # whole. (A CHECK takes no parameters; MAX_STANZA is an int of this module's.)
        self._db.execute(
            "CREATE TABLE stanza (seq INTEGER PRIMARY KEY, path TEXT NOT NULL,"
            " name TEXT NOT NULL, line INTEGER NOT NULL, settings TEXT NOT NULL"
            f" CHECK (length(settings) <= {int(MAX_STANZA)}), UNIQUE (path, name))"
        )

    def add(self, path: str, stanzas: Iterable[Stanza]) -> None:
        """Merge the stanzas of the file at ``path``, as the parser yields them."""
        for stanza in stanzas:
            settings = json.dumps(stanza.settings, ensure_ascii=False, separators=(",", ":"))
            try:
                self._db.execute(_UPSERT, (path, stanza.name, stanza.line, settings))
            except sqlite3.IntegrityError:
                raise ConfError(
                    f"line {stanza.line}: stanza {stanza.name[:100]!r} over {MAX_STANZA}"
                    " characters of settings"
                ) from None

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM stanza").fetchone()
        return int(count)

    def batches(self) -> Iterator[list[MergedStanza]]:
        """Every stanza, in order, in lists of at most BATCH_ROWS rows and BATCH_CHARS."""
        batch: list[MergedStanza] = []
        size = 0
        rows = self._db.execute("SELECT path, name, line, settings FROM stanza ORDER BY seq")
        for path, name, line, settings in rows:
            batch.append(MergedStanza(path, name, line, json.loads(settings)))
            size += len(settings)
            if len(batch) >= BATCH_ROWS or size >= BATCH_CHARS:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def close(self) -> None:
        self._db.close()
