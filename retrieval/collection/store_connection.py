"""The store's connections: one SQLite connection per thread, read snapshots and writes.

`StoreConnection` opens the database (creating its schema, and bringing an older one up
to date), hands each thread its own connection, and makes the two kinds of transaction
every other part of the store runs in: `snapshot()` (one read of one committed
generation) and `transaction()` (one write, bumping the generation). It also names the
store's history (`history()`). The rows it reads and writes are the job of the classes
built on it (store_rows.py, store_log.py, store.py); store.py's docstring says how the
parts fit.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.collection import groups
from retrieval.collection.duplicates import DEFAULT_RULE, DuplicateRule
from retrieval.errors import CollectionLockedError

logger = logging.getLogger(__name__)

# The store's file name in a collection directory.
STORE = "store.sqlite"
# How long a write waits for another process's write to finish before giving up.
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
-- The store's history: minted when it is made (or first opened by a writer, for a store
-- made before histories), and anew for a snapshot's copy. A checkpoint names the history
-- it was built from, so a store replaced by another one never loads the other's.
INSERT OR IGNORE INTO meta (key, value) VALUES ('history', lower(hex(randomblob(16))));
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


class ThreadConnection:
    """One thread's SQLite connection and how deep its read snapshots are nested."""

    __slots__ = ("db", "depth", "__weakref__")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.depth = 0

    def __del__(self) -> None:
        self.db.close()  # its thread has ended, or the store was closed (closing twice is fine)


class StoreConnection:
    """The connections and transactions of a `Store` (store.py), whose docstring gives
    the arguments: one SQLite connection per thread, writes one at a time."""

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

    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def history(self) -> str:
        """The identity of this store's history of generations (32 hex digits).

        Generations number the writes of one history only: two stores at the same
        generation may hold different passages. "" for a store made before histories
        and opened read-only (a writer's open mints one).
        """
        row = self._db.execute("SELECT value FROM meta WHERE key = 'history'").fetchone()
        return "" if row is None else str(row[0])

    def start_new_history(self) -> str:
        """Gives the store a new history identity and returns it: for a copy that will
        go its own way (a snapshot), so that no checkpoint of the original fits it."""
        self._db.execute(
            "UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'history'"
        )
        return self.history()
