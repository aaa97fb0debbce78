"""The collection's single source of truth: one SQLite database in WAL mode.

It holds articles, their passages with vectors (float32 blobs), an FTS5 table over
passage text for lexical search, each article's duplicate group (groups.py), and a
generation counter that every committed write bumps. The FAISS index is derived from
it (see live_index.py). Each write is one transaction, so a reader, or a process killed
mid-write, sees all of it or none.

The store is also the index's log: every passage row carries the generation that added
it, and `removed` records the generation that deleted each passage, so the changes
between two generations can be read back exactly (`vectors(since, until)`,
`removed_between`).

Threads: each thread uses its own SQLite connection (SQLite connections must not be
shared by threads that run at the same time). `snapshot()` opens a read transaction on
the calling thread's connection: every read inside it sees one committed generation,
whatever other threads or processes commit meanwhile (WAL readers never block writers
and are never blocked by them). `transaction()` is one write; SQLite itself lets one
writer in at a time, across processes, and makes the others wait up to a timeout.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retrieval.collection import duplicates, groups
from retrieval.collection.duplicates import DEFAULT_RULE, DuplicateRule
from retrieval.errors import CollectionLockedError
from retrieval.records import Article, Filters, Passage

# The store's file name in a collection directory.
STORE = "store.sqlite"
# How long a write waits for another process's write to finish before giving up.
logger = logging.getLogger(__name__)

DEFAULT_WRITE_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    date TEXT,
    source TEXT,
    url TEXT,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    generation INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_date ON articles (date);
CREATE INDEX IF NOT EXISTS articles_source ON articles (source);
-- AUTOINCREMENT: a passage id is never reused, so a stale id never names new text.
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT NOT NULL REFERENCES articles (id),
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    title TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    vector BLOB NOT NULL,
    generation INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_article ON passages (article_id, ordinal);
CREATE INDEX IF NOT EXISTS passages_generation ON passages (generation);
-- Passages deleted at a generation: lets an index saved earlier catch up without a rebuild.
CREATE TABLE IF NOT EXISTS removed (passage_id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_generation ON removed (generation);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5 (
    title, text, content='passages', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS passages_fts_insert AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
END;
CREATE TRIGGER IF NOT EXISTS passages_fts_delete AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts (passages_fts, rowid, title, text)
    VALUES ('delete', old.id, old.title, old.text);
END;
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', '0');
-- Row counts kept by triggers in the same transaction as every write, so that reading
-- them costs nothing at any size (count(*) scans the table). The INSERT OR IGNOREs
-- seed them once for a store made before they existed.
INSERT OR IGNORE INTO meta (key, value) SELECT 'articles', count(*) FROM articles;
INSERT OR IGNORE INTO meta (key, value) SELECT 'passages', count(*) FROM passages;
CREATE TRIGGER IF NOT EXISTS articles_count_insert AFTER INSERT ON articles BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'articles';
END;
CREATE TRIGGER IF NOT EXISTS articles_count_delete AFTER DELETE ON articles BEGIN
    UPDATE meta SET value = value - 1 WHERE key = 'articles';
END;
CREATE TRIGGER IF NOT EXISTS passages_count_insert AFTER INSERT ON passages BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'passages';
END;
CREATE TRIGGER IF NOT EXISTS passages_count_delete AFTER DELETE ON passages BEGIN
    UPDATE meta SET value = value - 1 WHERE key = 'passages';
END;
"""


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


def to_blob(vector: NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blobs(blobs: Sequence[bytes], dim: int) -> NDArray[np.float32]:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).copy()


class ThreadConnection:
    """One thread's SQLite connection and how deep its read snapshots are nested."""

    __slots__ = ("db", "depth", "__weakref__")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.depth = 0

    def __del__(self) -> None:
        self.db.close()  # its thread has ended, or the store was closed (closing twice is fine)


class Store:
    """SQLite access for one collection, safe to share between threads.

    Args:
        path: the database file (created with its schema when missing, unless readonly).
        readonly: open without writing anything (for copies and inspection).
        write_timeout: default seconds a write waits for another writer.
        duplicate_rule: how articles are grouped as duplicates (groups.py); a store whose
            groups were made by another rule, or that has articles without a group (a
            collection made before groups existed), is regrouped on opening.
    """

    def __init__(
        self, path: Path, *, readonly: bool = False,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT_S,
        duplicate_rule: DuplicateRule = DEFAULT_RULE,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.write_timeout = write_timeout
        self.duplicate_rule = duplicate_rule
        self._local = threading.local()
        self._connections: weakref.WeakSet[ThreadConnection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        db = self._db  # the opening thread's connection; creates the schema
        if not readonly:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
            db.executescript(groups.SCHEMA)
            self._group_ungrouped()
        # A read-only copy of a collection made before groups existed has no such table:
        # its searches then treat every article as its own group.
        self.has_groups = self._has_table("duplicates")

    def _group_ungrouped(self) -> None:
        """The migration to duplicate groups, idempotent: one transaction that groups
        every article lacking a group. It changes no article or passage, so it bumps no
        generation; a reader sees either no groups or all of them."""
        db = self._db
        if not groups.stale(db, self.duplicate_rule):
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            # Another process writes, most likely this same migration (a large old
            # collection takes minutes). Open without it: an article without a group is
            # its own group until a later open groups it, so nothing is wrong meanwhile.
            logger.warning("%s: duplicate groups not brought up to date now: another "
                           "process is writing; the next open will", self.path.parent)
            return
        try:
            groups.regroup(db, self.duplicate_rule)  # checks again, now holding the lock
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _has_table(self, name: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    @property
    def _db(self) -> sqlite3.Connection:
        """The calling thread's connection, opened on first use."""
        return self._thread().db

    def _thread(self) -> ThreadConnection:
        """The calling thread's connection and snapshot depth, made on first use.

        Only the thread-local holds it strongly: when the thread ends (a web server's
        worker threads come and go), it is collected and its connection closed, instead
        of one connection, its cache and its file handles left behind per thread.
        """
        mine: ThreadConnection | None = getattr(self._local, "connection", None)
        if mine is None:
            mine = ThreadConnection(self._connect())
            self._local.connection = mine
            with self._connections_lock:
                self._connections.add(mine)
        return mine

    def open_connections(self) -> int:
        """How many threads hold a connection now (the ones that ended hold none)."""
        with self._connections_lock:
            return len(self._connections)

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode=ro" if self.readonly else f"file:{self.path}"
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write is exactly
        # one transaction and nothing is committed behind our back. check_same_thread is
        # off only so that close() may close every thread's connection.
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(self.write_timeout * 1000)}")
        if not self.readonly:
            # FULL: each commit survives power loss too, not only a crash of this process.
            db.execute("PRAGMA synchronous = FULL")
        return db

    def close(self) -> None:
        """Closes every thread's connection; the store is unusable afterwards."""
        with self._connections_lock:
            for connection in list(self._connections):
                connection.db.close()
            self._connections.clear()
        self._local = threading.local()

    @contextmanager
    def snapshot(self) -> Iterator[int]:
        """A read transaction on this thread's connection; yields its generation.

        Every read inside it sees the same committed state. Nested calls share the
        outermost one.
        """
        mine = self._thread()
        if mine.depth:
            mine.depth += 1
            try:
                yield self.generation()
            finally:
                mine.depth -= 1
            return
        mine.db.execute("BEGIN")
        mine.depth = 1
        try:
            yield self.generation()  # the first read fixes the snapshot
        finally:
            mine.depth = 0
            mine.db.execute("COMMIT")

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[int]:
        """One write transaction that bumps the generation; yields the new generation.

        Args:
            timeout: seconds to wait for another writer (default: the store's).

        Raises:
            CollectionLockedError: another writer kept the database past the timeout.
        """
        db = self._db
        if self._thread().depth:
            raise RuntimeError("a write cannot start inside a read snapshot")
        wait = self.write_timeout if timeout is None else timeout
        db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            raise CollectionLockedError(
                f"{self.path.parent} is being written by another process (waited {wait:g} s): "
                "try again when it is done"
            ) from None
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(self.write_timeout * 1000)}")
        try:
            generation = self.generation() + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
            yield generation
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def backup(self, target: Path) -> int:
        """Copies the database, consistent as of one generation, while others write.

        SQLite's online backup API copies the pages of one read snapshot; writers in
        other processes carry on. Returns the generation the copy holds.
        """
        copy = sqlite3.connect(str(target))
        try:
            with self.snapshot() as generation:
                self._db.backup(copy)
            copy.execute("PRAGMA journal_mode = WAL")
        finally:
            copy.close()
        return generation

    # -- reads -------------------------------------------------------------------------

    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

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

    def vectors(
        self, dim: int, *, since: int = 0, until: int | None = None, batch: int = 50_000
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Stored vectors added in generations (since, until], in batches of (ids, vectors).

        Call it inside `snapshot()` with `until` = the snapshot's generation: the bound
        then says in the query what the snapshot already guarantees.
        """
        upper = until if until is not None else 2**62
        cursor = self._db.execute(
            "SELECT id, vector FROM passages WHERE generation > ? AND generation <= ? "
            "ORDER BY id",
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

    # -- writes (inside transaction()) ---------------------------------------------------

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
