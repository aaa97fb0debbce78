"""Collections for the service tests: seeds/ plus a few dated, sourced news articles."""

from __future__ import annotations

import shutil
from pathlib import Path

from retrieval.records import Article

NEWS = [
    Article("rain", "Storms hit the coast",
            "Heavy rain flooded roads along the coast on Monday.\n\n"
            "Emergency crews rescued drivers from stranded cars.",
            date="2024-01-10", source="wire"),
    Article("rates", "Central bank holds rates",
            "The central bank kept interest rates unchanged.\n\n"
            "Inflation has eased for three months in a row, officials said.",
            date="2024-02-01", source="finance"),
    Article("match", "Cup final ends in draw",
            "The cup final ended one-all after extra time.\n\n"
            "The replay will be held next week at the national stadium.",
            date="2024-03-05", source="sport"),
    Article("flood", "River floods town",
            "The river burst its banks and flooded the town centre.\n\n"
            "Residents were evacuated as water levels kept rising.",
            date="2024-01-12", source="wire"),
]


def build_collection(path: Path, embedder, seed_articles, *, policy=None) -> Path:
    """A closed collection at `path` holding the seed article and NEWS (index policy:
    the default one unless given)."""
    from retrieval.collection.collection import Collection

    with Collection.open(path, embedder, policy=policy) as collection:
        collection.add_articles([*seed_articles, *NEWS])
    return path


def copy_collection(source: Path, target: Path) -> Path:
    """A private copy, for tests that write or run in another process."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("write.lock"))
    return target
