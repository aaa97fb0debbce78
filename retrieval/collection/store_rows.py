"""The store's rows as searches and clients read them: articles, passages, groups, FTS5.

Every method reads on the calling thread's connection (store_connection.py), so inside a
`snapshot()` they all see one generation.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retrieval.collection import duplicates, groups
from retrieval.collection.store_connection import StoreConnection
from retrieval.records import Article, Filters, Passage


def filters_sql(filters: Filters, alias: str = "a") -> tuple[str, list[Any]]:
    """A WHERE fragment over the articles table (aliased) and its parameters."""
    clauses, params = ["1"], []
    if filters.article_ids is not None:
        clauses.append(f"{alias}.id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(filters.article_ids)))
    if filters.sources is not None:
        clauses.append(f"{alias}.source IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(filters.sources)))
    if filters.date_from is not None:
        clauses.append(f"{alias}.date >= ?")
        params.append(filters.date_from)
    if filters.date_to is not None:
        clauses.append(f"{alias}.date <= ?")
        params.append(filters.date_to)
    return " AND ".join(clauses), params


def from_blobs(blobs: Sequence[bytes], dim: int) -> NDArray[np.float32]:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).copy()


PASSAGE_COLUMNS = 'id, article_id, ordinal, text, start, "end", n_tokens'


def passage_from_row(row: sqlite3.Row) -> Passage:
    return Passage(
        id=row["id"],
        article_id=row["article_id"],
        ordinal=row["ordinal"],
        text=row["text"],
        start=row["start"],
        end=row["end"],
        n_tokens=row["n_tokens"],
    )


def article_from_row(row: sqlite3.Row) -> Article:
    return Article(
        id=row["id"],
        title=row["title"],
        text=row["text"],
        date=row["date"],
        source=row["source"],
        url=row["url"],
        metadata=json.loads(row["metadata"]),
    )


class StoreRows(StoreConnection):
    """Reads of articles, passages, duplicate groups and FTS5, for searches and clients."""

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT id, content_hash FROM articles WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
        return {row["id"]: row["content_hash"] for row in rows}

    def article(self, article_id: str) -> Article | None:
        row = self._db.execute("SELECT * FROM articles WHERE id = ?", (article_id,)).fetchone()
        return None if row is None else article_from_row(row)

    def passage(self, passage_id: int) -> Passage | None:
        row = self._db.execute(
            f"SELECT {PASSAGE_COLUMNS} FROM passages WHERE id = ?", (passage_id,)
        ).fetchone()
        return None if row is None else passage_from_row(row)

    def passages_of(self, article_id: str) -> list[Passage]:
        rows = self._db.execute(
            f"SELECT {PASSAGE_COLUMNS} FROM passages WHERE article_id = ? ORDER BY ordinal",
            (article_id,),
        )
        return [passage_from_row(row) for row in rows]

    def hit_rows(self, passage_ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        """Passage and article fields for building hits, keyed by passage id."""
        rows = self._db.execute(
            """SELECT p.id, p.article_id, p.text, p.start, p."end", a.title, a.date, a.source, a.url
               FROM passages p JOIN articles a ON a.id = p.article_id
               WHERE p.id IN (SELECT value FROM json_each(?))""",
            (json.dumps([int(i) for i in passage_ids]),),
        )
        return {row["id"]: row for row in rows}

    def passage_ids_matching(self, filters: Filters) -> NDArray[np.int64]:
        where, params = filters_sql(filters, "a")
        rows = self._db.execute(
            f"SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id WHERE {where}",
            params,
        )
        return np.fromiter((row[0] for row in rows), dtype=np.int64)

    def article_of(self, passage_ids: Sequence[int]) -> dict[int, str]:
        rows = self._db.execute(
            "SELECT id, article_id FROM passages WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps([int(i) for i in passage_ids]),),
        )
        return {row[0]: row[1] for row in rows}

    def dates_of(self, passage_ids: Sequence[int]) -> dict[int, str | None]:
        """The date of each passage's article (None when undated), keyed by passage id."""
        rows = self._db.execute(
            """SELECT p.id, a.date FROM passages p JOIN articles a ON a.id = p.article_id
               WHERE p.id IN (SELECT value FROM json_each(?))""",
            (json.dumps([int(i) for i in passage_ids]),),
        )
        return {row[0]: row[1] for row in rows}

    def article_vectors(self, article_id: str, dim: int) -> NDArray[np.float32]:
        """The stored unit vectors of an article's passages, (n, dim), in passage order."""
        rows = self._db.execute(
            "SELECT vector FROM passages WHERE article_id = ? ORDER BY ordinal", (article_id,)
        )
        return from_blobs([row[0] for row in rows], dim)

    def article_rows(self, article_ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        """id, title, date, source and url of each article, keyed by id."""
        rows = self._db.execute(
            "SELECT id, title, date, source, url FROM articles "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(article_ids)),),
        )
        return {row["id"]: row for row in rows}

    def group_keys(self, passage_ids: Sequence[int]) -> dict[int, str]:
        """Each passage's duplicate group, as a key to collapse on (groups.py)."""
        if not self.has_groups:
            return {pid: f"a{article}" for pid, article in self.article_of(passage_ids).items()}
        return groups.group_keys(self._db, passage_ids)

    def article_group_keys(self, article_ids: Sequence[str]) -> dict[str, str]:
        """Each stored article's duplicate group key, keyed by article id."""
        if not self.has_groups:
            return {row: f"a{row}" for row in self.article_rows(article_ids)}
        return groups.article_group_keys(self._db, article_ids)

    def fingerprints(self, article_ids: Sequence[str]) -> dict[str, duplicates.Fingerprint]:
        """The articles' duplicate fingerprints (groups.fingerprints); {} without groups."""
        return groups.fingerprints(self._db, article_ids) if self.has_groups else {}

    def duplicates_of(
        self, article_ids: Sequence[str], filters: Filters | None = None
    ) -> dict[str, list[str]]:
        """The other articles in each article's duplicate group (matching `filters`),
        oldest first; [] for an article alone in its group."""
        if not self.has_groups:
            return {article_id: [] for article_id in article_ids}
        where, params = filters_sql(filters or Filters(), "a")
        return groups.others_in_group(self._db, article_ids, where, params)

    def duplicate_summary(self) -> dict[str, int]:
        """Groups of two or more articles and the articles in them (scans the groups)."""
        if not self.has_groups:
            return {"duplicate_groups": 0, "articles_in_duplicate_groups": 0}
        return groups.summary(self._db)

    def lexical(self, match: str, k: int, filters: Filters) -> list[tuple[int, float]]:
        """BM25 over passage title and text: (passage id, score), best first.

        SQLite's bm25() is lower-is-better; it is negated so higher is better here too.
        """
        if filters.is_empty():
            # The FTS table alone: its rows are exactly the stored passages (the triggers
            # keep it so), and joining every match to passages and articles only to filter
            # nothing tripled the cost (11.7 against 4.0 ms of CPU per BBC headline over
            # 7,827 passages: most headlines share a word with half the passages).
            rows = self._db.execute(
                """SELECT rowid, -bm25(passages_fts) FROM passages_fts
                   WHERE passages_fts MATCH ? ORDER BY bm25(passages_fts) LIMIT ?""",
                (match, k),
            )
            return [(row[0], row[1]) for row in rows]
        where, params = filters_sql(filters, "a")
        rows = self._db.execute(
            f"""SELECT p.id, -bm25(passages_fts) AS score
                FROM passages_fts JOIN passages p ON p.id = passages_fts.rowid
                JOIN articles a ON a.id = p.article_id
                WHERE passages_fts MATCH ? AND {where}
                ORDER BY bm25(passages_fts) LIMIT ?""",
            [match, *params, k],
        )
        return [(row[0], row[1]) for row in rows]
