"""The store as the index's log: what each generation added and removed, and counts.

Indexes derived from the store (live_index.py, checkpoint.py, bm25.py) read the changes
between two generations here (`vectors`, `passage_rows`, `removed_between`), each in an
order an index of the store serves, inside one `snapshot()`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from retrieval.collection.store_connection import StoreConnection
from retrieval.collection.store_rows import from_blobs


class StoreLog(StoreConnection):
    """Reads of the log (changes between generations) and of the store's sizes."""

    def vectors(
        self, dim: int, *, since: int = 0, until: int | None = None, batch: int = 50_000
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Stored vectors added in generations (since, until], in batches of (ids, vectors),
        by generation, then id.

        Call it inside `snapshot()` with `until` = the snapshot's generation: the bound
        then says in the query what the snapshot already guarantees.
        """
        upper = until if until is not None else 2**62
        # The order of the generation index (its entries end with the row id): SQLite
        # walks it and sorts nothing. ORDER BY id alone sorted every vector read through
        # a temporary B-tree, spilled to a temporary file as large as the vectors read.
        cursor = self._db.execute(
            "SELECT id, vector FROM passages WHERE generation > ? AND generation <= ? "
            "ORDER BY generation, id",
            (since, upper),
        )
        while rows := cursor.fetchmany(batch):
            ids = np.array([row[0] for row in rows], dtype=np.int64)
            yield ids, from_blobs([row[1] for row in rows], dim)

    def passage_rows(self, *, since: int, until: int) -> Iterator[tuple[int, str, str]]:
        """(id, title, text) of the passages added in generations (since, until], by id.

        Call it inside `snapshot()`, as `vectors`, for an index derived from the text.
        """
        yield from self._db.execute(
            "SELECT id, title, text FROM passages WHERE generation > ? AND generation <= ? "
            "ORDER BY id",
            (since, until),
        )

    def lexical_term_counts(
        self, batch: int = 500_000
    ) -> Iterator[list[tuple[str, int, int]]]:
        """(term, passage id, count in title and text) of every stored passage, from the
        FTS5 index itself, grouped by term, in batches (for an in-memory BM25: bm25.py).

        Call it inside `snapshot()`: the FTS5 index is read in the same transaction.
        """
        self._db.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.passages_terms "
            "USING fts5vocab(main, passages_fts, instance)"
        )
        cursor = self._db.execute(
            "SELECT term, doc, count(*) FROM temp.passages_terms GROUP BY term, doc"
        )
        while rows := cursor.fetchmany(batch):
            yield rows

    def removed_between(self, since: int, until: int) -> NDArray[np.int64]:
        """Ids of the passages deleted in generations (since, until]."""
        rows = self._db.execute(
            "SELECT passage_id FROM removed WHERE generation > ? AND generation <= ?",
            (since, until),
        )
        return np.fromiter((row[0] for row in rows), dtype=np.int64)

    def count_added_since(self, generation: int) -> int:
        """Passages stored after a generation (those an index of that generation lacks)."""
        row = self._db.execute(
            "SELECT count(*) FROM passages WHERE generation > ?", (generation,)
        ).fetchone()
        return int(row[0])

    def count_removed_since(self, generation: int) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM removed WHERE generation > ?", (generation,)
        ).fetchone()
        return int(row[0])

    def passage_texts(self) -> tuple[int, NDArray[np.int64], list[str]]:
        """Every passage as "title\ntext", with its id, and the generation they reflect.

        Read in one snapshot, so the generation and the passages agree even while
        another process writes (for indexes derived from the store, such as bm25s).
        """
        with self.snapshot() as generation:
            rows = self._db.execute("SELECT id, title, text FROM passages ORDER BY id").fetchall()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        return generation, ids, [f"{row[1]}\n{row[2]}" for row in rows]

    def counts(self) -> dict[str, int]:
        """Articles and passages, read from the counters the triggers keep: O(1)."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE key IN ('articles', 'passages')"
        )
        return {row[0]: int(row[1]) for row in rows}

    def full_counts(self) -> dict[str, int]:
        """Counts by scanning the tables (for `info`, which checks everything)."""
        one = self._db.execute
        return {
            "articles": one("SELECT count(*) FROM articles").fetchone()[0],
            "passages": one("SELECT count(*) FROM passages").fetchone()[0],
            "vectors": one("SELECT count(*) FROM passages WHERE vector IS NOT NULL").fetchone()[0],
            "max_passage_tokens": one("SELECT coalesce(max(n_tokens), 0) FROM passages").fetchone()[
                0
            ],
        }

    def passage_ids(self) -> NDArray[np.int64]:
        rows = self._db.execute("SELECT id FROM passages ORDER BY id")
        return np.fromiter((row[0] for row in rows), dtype=np.int64)

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
