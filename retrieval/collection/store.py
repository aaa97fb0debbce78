"""The collection's single source of truth: one SQLite database in WAL mode.

It holds articles, their passages with vectors (float32 blobs), an FTS5 table over
passage text for lexical search, each article's duplicate group (groups.py), and a
generation counter that every committed write bumps. The FAISS index is derived from
it (see live_index.py). Each write is one transaction, so a reader, or a process killed
mid-write, sees all of it or none.

The store is also the index's log: every passage row carries the generation that added
it, and `removed` records the generation that deleted each passage, so the changes
between two generations can be read back exactly (`vectors(since, until)`,
`removed_between`). Generations count the writes of one history of the store, which
`history()` names: a store replaced by another, or restored from a snapshot's copy,
has another history, and an index saved from one history never fits another.

Threads: each thread uses its own SQLite connection (SQLite connections must not be
shared by threads that run at the same time). `snapshot()` opens a read transaction on
the calling thread's connection: every read inside it sees one committed generation,
whatever other threads or processes commit meanwhile (WAL readers never block writers
and are never blocked by them). `transaction()` is one write; SQLite itself lets one
writer in at a time, across processes, and makes the others wait up to a timeout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from retrieval.collection import duplicates, groups
from retrieval.collection.store_connection import (
    DEFAULT_WRITE_TIMEOUT_S,
    SCHEMA,
    STORE,
    StoreConnection,
    ThreadConnection,
)
from retrieval.collection.store_log import StoreLog
from retrieval.collection.store_rows import (
    PASSAGE_COLUMNS,
    StoreRows,
    article_from_row,
    filters_sql,
    from_blobs,
    passage_from_row,
)
from retrieval.records import Article

__all__ = [
    "DEFAULT_WRITE_TIMEOUT_S", "PASSAGE_COLUMNS", "SCHEMA", "STORE", "NewPassage", "Store",
    "StoreConnection", "ThreadConnection", "article_from_row", "filters_sql", "from_blobs",
    "passage_from_row", "to_blob",
]


@dataclass(frozen=True, slots=True)
class NewPassage:
    """A passage about to be stored: everything but the id the store assigns."""

    ordinal: int
    start: int
    end: int
    text: str
    n_tokens: int
    vector: NDArray[np.float32]
    # None: the store assigns the next id. Set only when passages move between
    # collections with their ids (splitting into shards, joining them back).
    id: int | None = None


def to_blob(vector: NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class Store(StoreRows, StoreLog):
    """SQLite access for one collection, safe to share between threads.

    Args:
        path: the database file (created with its schema when missing, unless readonly).
        readonly: open without writing anything (for copies and inspection).
        write_timeout: default seconds a write waits for another writer.
        duplicate_rule: how articles are grouped as duplicates (groups.py); a store whose
            groups were made by another rule, or that has articles without a group (a
            collection made before groups existed), is regrouped on opening.

    Its parts, by job: connections and transactions (store_connection.py), the rows
    searches read (store_rows.py), the log and counts (store_log.py); the writes, here.
    """

    def put_article(
        self, article: Article, passages: Iterable[NewPassage], generation: int,
        fingerprint: duplicates.Fingerprint | None = None,
    ) -> tuple[list[int], list[int]]:
        """Inserts or replaces an article with its passages.

        Args:
            fingerprint: `duplicates.fingerprint(article.text)`, made before the
                transaction so that it does not hold the write lock (made here if None).

        Returns:
            (ids of the passages removed, ids of the passages added).
        """
        removed = self.delete_article(article.id, generation)
        self._db.execute(
            """INSERT INTO articles (id, title, text, date, source, url, metadata,
                                     content_hash, generation)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                article.id,
                article.title,
                article.text,
                article.date,
                article.source,
                article.url,
                json.dumps(article.metadata, ensure_ascii=False),
                article.content_hash(),
                generation,
            ),
        )
        added = []
        for passage in passages:
            cursor = self._db.execute(
                """INSERT INTO passages (id, article_id, ordinal, start, "end", text, title,
                                         n_tokens, vector, generation)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    passage.id,
                    article.id,
                    passage.ordinal,
                    passage.start,
                    passage.end,
                    passage.text,
                    article.title,
                    passage.n_tokens,
                    to_blob(passage.vector),
                    generation,
                ),
            )
            added.append(int(cursor.lastrowid or 0))
        # In the same transaction as the article: a crash never leaves one without a group.
        if fingerprint is None:
            fingerprint = duplicates.fingerprint(article.text)
        groups.assign(self._db, article.id, fingerprint, self.duplicate_rule)
        return removed, added

    def start_passage_ids_at(self, first: int) -> None:
        """New passages get ids from `first` on (or above the highest id ever used).

        For the shards of one collection (retrieval/cluster/layout.py): each allocates from its own
        range,
        so passage ids stay unique across them. AUTOINCREMENT takes the larger of the
        table's highest id and its sqlite_sequence row, plus one.
        """
        row = self._db.execute(
            "SELECT max(seq) FROM sqlite_sequence WHERE name = 'passages'"
        ).fetchone()
        seq = max(first - 1, row[0] or 0)  # never below an id already handed out
        self._db.execute("DELETE FROM sqlite_sequence WHERE name = 'passages'")
        self._db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('passages', ?)", (seq,))

    def delete_article(self, article_id: str, generation: int) -> list[int]:
        """Deletes an article and its passages; returns the removed passage ids."""
        ids = [
            row[0]
            for row in self._db.execute(
                "SELECT id FROM passages WHERE article_id = ?", (article_id,)
            )
        ]
        self._db.executemany(
            "INSERT OR REPLACE INTO removed (passage_id, generation) VALUES (?, ?)",
            [(i, generation) for i in ids],
        )
        self._db.execute("DELETE FROM passages WHERE article_id = ?", (article_id,))
        self._db.execute("DELETE FROM articles WHERE id = ?", (article_id,))
        return ids
