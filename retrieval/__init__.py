"""Semantic passage retrieval over news articles.

    from retrieval import Collection, Retriever, load_articles

    with Collection.open("data/news") as collection:
        collection.add_articles(load_articles(["seeds/"]).articles)
        hits = Retriever(collection).search("COVID-19 cooperation", k=3)

Names are imported on first use (PEP 562), so `import retrieval` stays light: the HTTP
client imports `retrieval.records` without pulling in torch, FAISS or numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS = {
    "Article": "retrieval.records",
    "Collection": "retrieval.collection.collection",
    "CollectionError": "retrieval.errors",
    "EmptyIndexError": "retrieval.errors",
    "FaissIndex": "retrieval.collection.index",
    "Filters": "retrieval.records",
    "Hit": "retrieval.records",
    "InputError": "retrieval.errors",
    "ModelMismatchError": "retrieval.errors",
    "NotFoundError": "retrieval.errors",
    "Passage": "retrieval.records",
    "RelatedArticle": "retrieval.records",
    "RetrievalError": "retrieval.errors",
    "Retriever": "retrieval.search.retriever",
    "Searcher": "retrieval.search.retriever",
    "SentenceTransformerEmbedder": "retrieval.models.embedding",
    "load_articles": "retrieval.ingestion.loaders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
