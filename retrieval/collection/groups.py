"""Duplicate groups in the store: each article's group, kept in the article's own write.

Tables (created with the store, and on opening a collection made before them):

    duplicates        article id -> group id, its MinHash signature, its exact digest
    duplicate_bands   article id's LSH band keys (indexed), to find candidates

A group id is an integer from a counter that is never reset, not the id of the article
that founded it: deleting or replacing any member, the first one included, leaves the
others with the same valid id, and a new copy of them still joins it (their band keys
remain). A trigger removes an article's rows when the article row goes, in the same
transaction, so no path that deletes an article can leave a stale group behind.

A new article joins the group of its most similar earlier article that the rule
groups with it (duplicates.py), else founds a group. Groups are never merged: an
article similar to two groups joins the closer one, so a write touches only its own rows.

All functions take the calling thread's connection, inside the store's transaction
(writes) or snapshot (reads).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from retrieval.collection import duplicates
from retrieval.collection.duplicates import DuplicateRule

SCHEMA = """
CREATE TABLE IF NOT EXISTS duplicates (
    article_id TEXT PRIMARY KEY,
    grp INTEGER NOT NULL,
    exact TEXT NOT NULL,
    signature BLOB NOT NULL,
    shingles INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS duplicates_group ON duplicates (grp);
CREATE INDEX IF NOT EXISTS duplicates_exact ON duplicates (exact);
CREATE TABLE IF NOT EXISTS duplicate_bands (key INTEGER NOT NULL, article_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS duplicate_bands_key ON duplicate_bands (key);
CREATE INDEX IF NOT EXISTS duplicate_bands_article ON duplicate_bands (article_id);
CREATE TRIGGER IF NOT EXISTS articles_duplicates_delete AFTER DELETE ON articles BEGIN
    DELETE FROM duplicate_bands WHERE article_id = old.id;
    DELETE FROM duplicates WHERE article_id = old.id;
END;
INSERT OR IGNORE INTO meta (key, value) VALUES ('duplicate_groups', '0');
"""
# The meta key holding the rule the stored groups were made with.
RULE_KEY = "duplicate_rule"


def assign(
    db: sqlite3.Connection, article_id: str, found: duplicates.Fingerprint, rule: DuplicateRule
) -> int:
    """Gives a just-inserted article its group (inside its write); returns the group id.

    `found` is the article's `duplicates.fingerprint`, made by the caller before the
    write: hashing is CPU work that other writers should not wait for.
    """
    group = _exact_group(db, found.exact)
    if group is None:
        group = _near_group(db, found, rule)
    if group is None:
        group = _new_group(db)
    db.execute(
        "INSERT INTO duplicates (article_id, grp, exact, signature, shingles) "
        "VALUES (?, ?, ?, ?, ?)",
        (article_id, group, found.exact, duplicates.to_blob(found.signature), found.size),
    )
    db.executemany(
        "INSERT INTO duplicate_bands (key, article_id) VALUES (?, ?)",
        [(key, article_id) for key in found.bands],
    )
    return group


def _exact_group(db: sqlite3.Connection, exact: str) -> int | None:
    # Any holder of the digest will do: each joined the group of an earlier one, so all
    # of them are in one group. (Ordering them would read every one: a benchmark
    # repeating one text holds 100,000.)
    row = db.execute("SELECT grp FROM duplicates WHERE exact = ? LIMIT 1", (exact,)).fetchone()
    return None if row is None else int(row[0])


def _near_group(
    db: sqlite3.Connection, found: duplicates.Fingerprint, rule: DuplicateRule
) -> int | None:
    candidates: dict[str, None] = {}
    for key in found.bands:
        bucket = db.execute(
            "SELECT article_id FROM duplicate_bands WHERE key = ? LIMIT ?",
            (key, duplicates.MAX_PER_BUCKET),
        )
        candidates.update((row[0], None) for row in bucket)
    if not candidates:
        return None
    rows = db.execute(
        "SELECT article_id, grp, signature, shingles FROM duplicates "
        "WHERE article_id IN (SELECT value FROM json_each(?)) ORDER BY rowid",
        (json.dumps(list(candidates)),),
    ).fetchall()
    known = [(row[0], duplicates.Fingerprint(duplicates.from_blob(row[2]), row[3])) for row in rows]
    best = duplicates.best_match(found, known, rule)
    return next((int(row[1]) for row in rows if row[0] == best), None)


def _new_group(db: sqlite3.Connection) -> int:
    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'duplicate_groups'")
    return int(db.execute("SELECT value FROM meta WHERE key = 'duplicate_groups'").fetchone()[0])


# -- migration ----------------------------------------------------------------------------


def stale(db: sqlite3.Connection, rule: DuplicateRule) -> bool:
    """True when some article lacks a group, or the groups were made by another rule."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (RULE_KEY,)).fetchone()
    if row is None or row[0] != rule.describe():
        return True
    missing = db.execute(
        "SELECT 1 FROM articles a WHERE NOT EXISTS "
        "(SELECT 1 FROM duplicates d WHERE d.article_id = a.id) LIMIT 1"
    ).fetchone()
    return missing is not None


def regroup(db: sqlite3.Connection, rule: DuplicateRule) -> int:
    """Groups the articles that lack a group (all of them if the rule changed), oldest
    first; inside a write. Returns how many were grouped."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (RULE_KEY,)).fetchone()
    if row is None or row[0] != rule.describe():
        db.execute("DELETE FROM duplicate_bands")
        db.execute("DELETE FROM duplicates")
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (RULE_KEY, rule.describe())
        )
    rows = db.execute(
        "SELECT id, text FROM articles a WHERE NOT EXISTS "
        "(SELECT 1 FROM duplicates d WHERE d.article_id = a.id) ORDER BY rowid"
    ).fetchall()
    for article_id, text in rows:
        assign(db, article_id, duplicates.fingerprint(text), rule)
    return len(rows)


# -- reads --------------------------------------------------------------------------------


def group_keys(db: sqlite3.Connection, passage_ids: Sequence[int]) -> dict[int, str]:
    """Each passage's group as a key for collapsing: "g<id>", or "a<article>" for an
    article without a group (written by a version that kept none)."""
    rows = db.execute(
        """SELECT p.id, coalesce('g' || d.grp, 'a' || p.article_id)
           FROM passages p LEFT JOIN duplicates d ON d.article_id = p.article_id
           WHERE p.id IN (SELECT value FROM json_each(?))""",
        (json.dumps([int(i) for i in passage_ids]),),
    )
    return {row[0]: row[1] for row in rows}


def article_group_keys(db: sqlite3.Connection, article_ids: Sequence[str]) -> dict[str, str]:
    """Each article's group key (as `group_keys`), keyed by article id."""
    rows = db.execute(
        """SELECT a.id, coalesce('g' || d.grp, 'a' || a.id)
           FROM articles a LEFT JOIN duplicates d ON d.article_id = a.id
           WHERE a.id IN (SELECT value FROM json_each(?))""",
        (json.dumps(list(article_ids)),),
    )
    return {row[0]: row[1] for row in rows}


def summary(db: sqlite3.Connection) -> dict[str, int]:
    """Groups of two or more articles, and the articles in them."""
    row = db.execute(
        "SELECT count(*), coalesce(sum(n), 0) FROM "
        "(SELECT count(*) AS n FROM duplicates GROUP BY grp HAVING n > 1)"
    ).fetchone()
    return {"duplicate_groups": int(row[0]), "articles_in_duplicate_groups": int(row[1])}


def fingerprints(
    db: sqlite3.Connection, article_ids: Sequence[str]
) -> dict[str, duplicates.Fingerprint]:
    """The stored fingerprints (signature, size, exact digest) of the given articles that
    have one: a router over shards compares them to find groups across shards."""
    rows = db.execute(
        "SELECT article_id, signature, shingles, exact FROM duplicates "
        "WHERE article_id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(article_ids)),),
    )
    return {
        row[0]: duplicates.Fingerprint(duplicates.from_blob(row[1]), row[2], row[3])
        for row in rows
    }


def others_in_group(
    db: sqlite3.Connection, article_ids: Sequence[str], where: str, params: list[Any]
) -> dict[str, list[str]]:
    """The other members of each article's group that pass `where` (over articles `a`),
    oldest first, keyed by article id; an article alone in its group maps to []."""
    rows = db.execute(
        f"""SELECT mine.article_id, a.id
            FROM duplicates mine
            JOIN duplicates d ON d.grp = mine.grp AND d.article_id != mine.article_id
            JOIN articles a ON a.id = d.article_id
            WHERE mine.article_id IN (SELECT value FROM json_each(?)) AND {where}
            ORDER BY d.rowid""",
        [json.dumps(list(article_ids)), *params],
    )
    out: dict[str, list[str]] = {article_id: [] for article_id in article_ids}
    for article_id, other in rows:
        out[article_id].append(other)
    return out
