"""A sharded collection on disk: N ordinary collections and the manifest that names them.

Layout of a shards directory:

    shards.json      format version, placement rule, shard directory names, and the
                     collection manifest (model, chunker, index) every shard shares
    shard-000/       an ordinary collection (retrieval/collection/collection.py), holding the
    articles whose
    shard-001/       id hashes to it; on a cluster, each lies on the disk of the node
    ...              that serves it, at the same path under the shards directory

Placement is stable: `shard_of(id, n)` is blake2b of the article id modulo n, the same
on every machine and Python (the builtin `hash` of a str is salted per process). An
article's passages stay together, so adding, replacing or deleting it touches one shard,
and `max_per_article` and deletes stay local to it.

Passage ids are unique across shards: shard i hands out new ids from its own range,
(i + 1) * ID_RANGE upwards, while passages split from one collection keep the ids they
had there (all below ID_RANGE). So a split collection answers with the very passage ids
of the one it came from, and `join` gives them back.

A shards directory is usable once shards.json exists: it is written last (atomically),
so a split or create that was interrupted leaves no half-made sharded collection behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.collection.collection import Collection
from retrieval.collection.manifest import read_manifest, write_manifest
from retrieval.collection.store import NewPassage
from retrieval.errors import CollectionFormatError, InputError
from retrieval.records import Article

SHARDS_MANIFEST = "shards.json"
FORMAT_VERSION = 1
PLACEMENT = "blake2b-64(article id) mod shards"
# Each shard's own range of new passage ids. 2**40 passages per shard, and ids stay
# below 2**53 (exact in JavaScript, so the search page shows them right) up to 8,191 shards.
ID_RANGE = 2**40
MAX_SHARDS = 2**53 // ID_RANGE - 1
# Articles copied per transaction by split and join.
COPY_BATCH = 256


def shard_of(article_id: str, n: int) -> int:
    """The shard (0 .. n-1) that holds an article: stable across processes and machines."""
    digest = hashlib.blake2b(article_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def shard_name(index: int) -> str:
    return f"shard-{index:03d}"


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """What shards.json says: where the shards are and what they were built with.

    Attributes:
        path: the shards directory.
        shards: each shard's directory name, relative to `path`, in shard order.
        collection: the collection manifest every shard holds (embedder, chunker, index).
    """

    path: Path
    shards: tuple[str, ...]
    collection: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.shards)

    def shard_dir(self, index: int) -> Path:
        return self.path / self.shards[index]

    def shard_of(self, article_id: str) -> int:
        return shard_of(article_id, self.n)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "placement": PLACEMENT,
            "shards": list(self.shards), "id_range": ID_RANGE, "collection": self.collection,
        }

    @classmethod
    def from_json(cls, path: Path, data: dict[str, Any]) -> ShardLayout:
        return cls(path, tuple(data["shards"]), data["collection"])


def is_sharded(path: Path) -> bool:
    return (Path(path) / SHARDS_MANIFEST).is_file()


def read_layout(path: str | Path) -> ShardLayout:
    """The layout of the sharded collection at `path`.

    Raises:
        CollectionFormatError: no shards.json there, or one this engine cannot read.
    """
    path = Path(path).expanduser().resolve()
    file = path / SHARDS_MANIFEST
    if not file.is_file():
        raise CollectionFormatError(
            f"no sharded collection at {path} (no {SHARDS_MANIFEST}): make one with "
            f"retrieval shards create {path} --shards N, or retrieval shards split"
        )
    try:
        data = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CollectionFormatError(f"{file} is unreadable ({error})") from None
    if data.get("format_version") != FORMAT_VERSION or data.get("placement") != PLACEMENT:
        raise CollectionFormatError(
            f"{file} has format {data.get('format_version')!r} and placement "
            f"{data.get('placement')!r}; this engine reads {FORMAT_VERSION} and {PLACEMENT!r}"
        )
    return ShardLayout.from_json(path, data)


def write_layout(layout: ShardLayout) -> None:
    """Writes shards.json atomically (temporary file, fsync, rename)."""
    tmp = layout.path / (SHARDS_MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(layout.to_json(), handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, layout.path / SHARDS_MANIFEST)


def create_shards(path: str | Path, n: int, manifest: dict[str, Any]) -> ShardLayout:
    """Makes an empty sharded collection of n shards sharing one collection manifest.

    Args:
        manifest: a collection manifest (`manifest.new_manifest`, or an existing
            collection's): the model, chunker and index of every shard.

    Raises:
        InputError: n out of range, or `path` already holds something.
    """
    path = Path(path).expanduser().resolve()
    if not 1 <= n <= MAX_SHARDS:
        raise InputError(f"shards must be between 1 and {MAX_SHARDS}, got {n}")
    refuse_nonempty(path)
    layout = ShardLayout(path, tuple(shard_name(i) for i in range(n)), manifest)
    for index in range(n):
        write_manifest(layout.shard_dir(index), manifest)
        shard_dir = layout.shard_dir(index)
        with Collection.open(shard_dir, create=False, background=False) as shard, \
                shard.store.transaction():
            shard.store.start_passage_ids_at((index + 1) * ID_RANGE)
    write_layout(layout)
    return layout


def open_shard(layout: ShardLayout, index: int, *, background: bool = True) -> Collection:
    """Shard `index` as an ordinary collection (its model loads on first use)."""
    return Collection.open(layout.shard_dir(index), create=False, background=background)


def split(source: str | Path, out: str | Path, n: int) -> ShardLayout:
    """Splits one collection into n shards at `out`, without re-embedding anything.

    Articles move with their passages, vectors and passage ids; each shard is then
    an ordinary collection with the source's model and settings. The source is read
    in one snapshot and left unchanged.

    Raises:
        InputError: n out of range, `out` not empty, or a source passage id too large.
    """
    final = Path(out).expanduser().resolve()
    refuse_nonempty(final)
    with Collection.open(source, create=False, background=False) as collection:
        # Made aside and renamed into place when whole: `out` never holds half a split.
        layout = create_shards(final.with_name(final.name + ".tmp"), n, collection.manifest)
        with ExitStack() as stack, collection.snapshot():
            shards = [stack.enter_context(open_shard(layout, i, background=False))
                      for i in range(n)]
            for batch in _articles_with_passages(collection):
                _check_ids(batch)
                _copy_into_shards(layout, shards, batch)
    if final.exists():
        final.rmdir()  # empty: refused above otherwise
    os.replace(layout.path, final)
    return ShardLayout(final, layout.shards, layout.collection)


def join(shards: str | Path, out: str | Path) -> Path:
    """Copies every shard's articles into one new collection at `out` (ids kept).

    Raises:
        InputError: `out` already holds something.
    """
    layout = read_layout(shards)
    out = Path(out).expanduser().resolve()
    refuse_nonempty(out)
    write_manifest(out, layout.collection)
    with ExitStack() as stack:
        target = stack.enter_context(Collection.open(out, create=False, background=False))
        opened = [stack.enter_context(open_shard(layout, i, background=False))
                  for i in range(layout.n)]
        for shard in opened:
            stack.enter_context(shard.snapshot())
        # In passage id order across all shards, as the one collection stored them: the
        # in-memory BM25 appends rows in id order (retrieval/collection/bm25.py).
        order = sorted((first, index, article_id) for index, shard in enumerate(opened)
                       for article_id, first in _first_passage_ids(shard).items())
        for start in range(0, len(order), COPY_BATCH):
            _write(target, [
                _article_with_passages(opened[index], article_id)
                for _, index, article_id in order[start : start + COPY_BATCH]
            ])
    return out


def refuse_nonempty(path: Path) -> None:
    if path.exists() and any(path.iterdir()):
        raise InputError(
            f"{path} is not empty: give a new directory (an interrupted split, join or "
            "create leaves it without its manifest: remove it and run the command again)"
        )


def _check_ids(batch: Sequence[tuple[Article, list[NewPassage]]]) -> None:
    for article, passages in batch:
        for passage in passages:
            if passage.id is not None and passage.id >= ID_RANGE:
                raise InputError(
                    f"passage {passage.id} of article {article.id!r} has an id of {ID_RANGE} "
                    "or more, which shards keep for their own new passages: this "
                    "collection cannot be split with its ids"
                )


def _copy_into_shards(
    layout: ShardLayout, shards: Sequence[Collection],
    batch: Sequence[tuple[Article, list[NewPassage]]],
) -> None:
    by_shard: dict[int, list[tuple[Article, list[NewPassage]]]] = {}
    for item in batch:
        by_shard.setdefault(layout.shard_of(item[0].id), []).append(item)
    for index, items in sorted(by_shard.items()):
        _write(shards[index], items)


def _write(target: Collection, items: Sequence[tuple[Article, list[NewPassage]]]) -> None:
    """One transaction: the articles with their passages as they were (ids included)."""
    with target.store.transaction() as generation:
        for article, passages in items:
            target.store.put_article(article, passages, generation)


def _articles_with_passages(
    collection: Collection,
) -> Iterator[list[tuple[Article, list[NewPassage]]]]:
    """Every article of the collection with its stored passages, in batches, in the order
    of their passage ids (an article's passages were stored together, in one write).

    Call inside `collection.snapshot()`, so that the batches are of one generation.
    """
    firsts = _first_passage_ids(collection)
    article_ids = sorted(firsts, key=firsts.__getitem__)
    for start in range(0, len(article_ids), COPY_BATCH):
        yield [_article_with_passages(collection, article_id)
               for article_id in article_ids[start : start + COPY_BATCH]]


def _first_passage_ids(collection: Collection) -> dict[str, int]:
    """Each article's lowest passage id."""
    store = collection.store
    passage_ids = [int(i) for i in store.passage_ids()]  # ascending
    firsts: dict[str, int] = {}
    for passage_id, article_id in sorted(store.article_of(passage_ids).items()):
        firsts.setdefault(article_id, passage_id)
    return firsts


def _article_with_passages(
    collection: Collection, article_id: str
) -> tuple[Article, list[NewPassage]]:
    store = collection.store
    article = store.article(article_id)
    assert article is not None  # read in one snapshot: its passages name it
    passages = store.passages_of(article_id)
    vectors = store.article_vectors(article_id, collection.dim)
    return article, [
        NewPassage(ordinal=p.ordinal, start=p.start, end=p.end, text=p.text,
                   n_tokens=p.n_tokens, vector=vector, id=p.id)
        for p, vector in zip(passages, vectors, strict=True)
    ]


def read_collection_manifest(path: str | Path) -> dict[str, Any]:
    """An ordinary collection's manifest (for `shards create --like`)."""
    manifest = read_manifest(Path(path).expanduser().resolve())
    if manifest is None:
        raise CollectionFormatError(f"no collection at {path}")
    return manifest
