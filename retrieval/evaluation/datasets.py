"""Reading labelled retrieval data in the BEIR layout, and deriving labels for the rest.

A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
`text`, optional `metadata`) and `qrels/<split>.tsv` (header `query-id corpus-id score`).
The corpus is read by `retrieval.ingestion.loaders` (the same path as `retrieval index`), so an
evaluation indexes exactly what a user would. Qrels and runs are plain nested dicts,
`{query_id: {doc_id: value}}`, which ranx, pytrec_eval and ir_measures all read.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.errors import InputError, LoadError
from retrieval.ingestion.loaders import load_file
from retrieval.records import Article

Qrels = dict[str, dict[str, int]]

_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True, slots=True)
class Dataset:
    """A corpus with queries and their relevance judgements.

    Attributes:
        name: the folder's name (for labels and cache keys).
        articles: the corpus, as loaded (bad records left out, see `errors`).
        queries: query id -> text, only the queries that have judgements.
        qrels: query id -> {doc id: grade}; a grade > 0 is relevant.
        errors: records of the corpus the loader refused (e.g. empty text).
        query_metadata: query id -> its `metadata` object from queries.jsonl.
    """

    name: str
    articles: list[Article]
    queries: dict[str, str]
    qrels: Qrels
    errors: list[LoadError] = field(default_factory=list)
    query_metadata: dict[str, dict[str, object]] = field(default_factory=dict)


def load_beir(
    folder: str | Path, split: str = "test", *, corpus_file: str = "corpus.jsonl"
) -> Dataset:
    """Loads a BEIR folder: the corpus, the split's qrels, and the queries they judge.

    Raises:
        InputError: a required file is missing or a qrels line is malformed.
    """
    root = Path(folder)
    qrels = read_qrels(_require(root / "qrels" / f"{split}.tsv"))
    queries, metadata = read_queries(_require(root / "queries.jsonl"), keep=qrels.keys())
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise InputError(
            f"{len(missing)} judged queries are not in queries.jsonl, e.g. {missing[:3]}"
        )
    corpus = load_file(_require(root / corpus_file))
    return Dataset(
        name=root.resolve().name, articles=corpus.articles, queries=queries,
        qrels=qrels, errors=corpus.errors, query_metadata=metadata,
    )


def read_qrels(path: Path) -> Qrels:
    """`query-id corpus-id score` rows (tab-separated, one header line) as nested dicts."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, start=1):
            if number == 1 and row and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise InputError(f"{path}:{number}: expected 3 tab-separated fields, got {row}")
            try:
                grade = int(float(row[2]))
            except ValueError:
                raise InputError(f"{path}:{number}: score {row[2]!r} is not a number") from None
            qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def read_queries(
    path: Path, *, keep: Iterable[str] | None = None
) -> tuple[dict[str, str], dict[str, dict[str, object]]]:
    """Query id -> text (and -> metadata), keeping only the ids in `keep` when given."""
    wanted = None if keep is None else set(keep)
    texts: dict[str, str] = {}
    metadata: dict[str, dict[str, object]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                query_id, text = str(record["_id"]), str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise InputError(f"{path}:{number}: not a query record ({error})") from None
            if wanted is None or query_id in wanted:
                texts[query_id] = text
                metadata[query_id] = dict(record.get("metadata") or {})
    return texts, metadata


def paragraph_spans(article: Article) -> dict[str, tuple[int, int]]:
    """Character span in `article.text` of each paragraph named in `metadata.paragraph_ids`.

    Paragraphs are separated by blank lines, in the order of `paragraph_ids` (the layout of
    SQuAD's articles.jsonl).

    Raises:
        InputError: the article has no paragraph_ids, or a different number of paragraphs.
    """
    ids = article.metadata.get("paragraph_ids")
    if not isinstance(ids, list):
        raise InputError(f"article {article.id!r} has no paragraph_ids list")
    text = article.text
    edges = [0, *(p for m in _BLANK_LINE.finditer(text) for p in (m.start(), m.end())), len(text)]
    spans = list(zip(edges[::2], edges[1::2], strict=True))
    if len(spans) != len(ids):
        raise InputError(
            f"article {article.id!r}: {len(spans)} paragraphs in its text, {len(ids)} paragraph_ids"
        )
    return {str(pid): span for pid, span in zip(ids, spans, strict=True)}


def read_duplicates(path: Path) -> dict[str, set[str]]:
    """Groups of identical documents from a `doc-id duplicate-of` TSV: id -> its whole group."""
    groups: dict[str, set[str]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if number == 1 and row and row[0] == "doc-id":
                continue
            if len(row) != 2:
                raise InputError(f"{path}:{number}: expected 2 tab-separated fields, got {row}")
            group = groups.get(row[0], {row[0]}) | groups.get(row[1], {row[1]})
            for doc_id in group:
                groups[doc_id] = group
    return groups


def _require(path: Path) -> Path:
    if not path.is_file():
        raise InputError(
            f"{path} is missing: expected a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
        )
    return path
