"""An Embedder on OpenVINO: the packaged model exported once, int8 by default, run without torch.

On first use the sentence-transformers model folder is converted to OpenVINO IR and, for
the int8 backend, statically quantised with NNCF on the fixed texts of
`retrieval.models.calibration`. The result is cached under `~/.cache/retrieval/models/` in a
folder named by the source model's fingerprint and the recipe, written to a temporary
folder and renamed into place, so a crash or a concurrent export never leaves half a model.

At run time only `openvino` and `tokenizers` are used: tokenize (truncate to the model's
limit, pad the batch to one of a few lengths), run the transformer, mean-pool its last
hidden state with the attention mask and L2-normalise: what the model's
sentence-transformers pipeline (Transformer, mean Pooling, Normalize) does, which the
tests check on the fp32 export. Models with another pooling are refused rather than
embedded wrongly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retrieval.errors import InputError, MissingDependencyError
from retrieval.models.calibration import calibration_digest, calibration_texts
from retrieval.models.embedding import (
    DEFAULT_MODEL,
    default_model_path,
    model_fingerprint,
    resolve_model,
)

logger = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp32")
# Bump when the export or quantisation settings change: it renames the cache folder.
RECIPE_VERSION = 1
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Token sequences are padded to SHORT_PAD, or else to a multiple of PAD_TO. OpenVINO's
# CPU plugin keeps compiled kernels and buffers per input shape: with any length from 1
# to 256, a service's memory grew without bound (0.6 to 3.3 GB in 12 minutes of
# `retrieval bench live`; 1 GB in 1,500 random batches in process). With 8 lengths it
# levels off (~0.8 GB worst case); SHORT_PAD adds a ninth, for what a search embeds: a
# typed query or a headline (BBC's: 9 word pieces at the median, 12 at most, with [CLS]
# and [SEP]), which padded to 32 cost a third more per query (2.5 against 2.1 ms, int8).
# Padded tokens are masked out of attention and of the mean, so vectors do not change.
SHORT_PAD = 16
PAD_TO = 32
# Inference threads of each model, when set (else every logical core): processes that
# share a machine (a service and a `retrieval index`) each get their share of the cores.
THREADS_VARIABLE = "RETRIEVAL_MODEL_THREADS"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "retrieval" / "models"


def backend_name(precision: str) -> str:
    return f"openvino-{precision}"


def threads_from_environment() -> int | None:
    """$RETRIEVAL_MODEL_THREADS as a number of threads, or None when it is not set.

    Raises:
        InputError: it is set to anything but a whole number of at least 1.
    """
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{THREADS_VARIABLE}={value!r}: give a whole number of threads, "
                         "at least 1 (or unset it to use every core)")
    return int(value)


def import_openvino(precision: str) -> Any:
    """The openvino module, or an error naming the extra that installs it.

    Raises:
        MissingDependencyError: openvino cannot be imported.
    """
    try:
        import openvino
    except ImportError as error:
        raise MissingDependencyError(
            f"the {backend_name(precision)} backend", "openvino", "fast", error
        ) from error
    return openvino


class OpenVinoEmbedder:
    """An Embedder running an OpenVINO export of a sentence-transformers model on the CPU.

    Args:
        model: a model folder, or the default model's name (its PyPI package's folder).
        precision: "int8" (static quantisation, the fast one) or "fp32" (a plain export).
        cache_dir: where exports are kept (default ~/.cache/retrieval/models).
        batch_size: texts per inference call, after sorting by length.
        threads: inference threads; None reads $RETRIEVAL_MODEL_THREADS, else uses every
            logical core, for single queries too.
            An earlier version ran calls of fewer than 4 texts on one thread (on an older
            OpenVINO, two had taken ~11 ms against one's ~3.6 ms); served on 2 cores, two
            threads answered a lone hybrid search about 1 ms sooner (p50 3.8-5.0 against
            4.8-5.8 ms, interleaved runs) with no loss at concurrency 32.

    Raises:
        InputError: no such model folder, or a pooling other than mean.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        precision: str = "int8",
        cache_dir: Path | None = None,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        ov = import_openvino(precision)
        location = resolve_model(model)
        if not isinstance(location, Path):
            raise InputError(f"model {model!r} is neither {DEFAULT_MODEL!r} nor an existing folder")
        self._name = DEFAULT_MODEL if location == default_model_path() else str(location)
        self._precision = precision
        self._max_tokens = read_max_tokens(location)
        check_mean_pooling(location)
        self._export = ensure_export(location, precision, cache_dir or default_cache_dir())
        self._info = json.loads((self._export / "info.json").read_text("utf-8"))

        self._counter = Tokenizer.from_file(str(location / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()
        self._tokenizer = Tokenizer.from_file(str(location / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self._max_tokens)
        self._tokenizer.no_padding()  # padded_feed pads to the few lengths above
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

        core, xml = ov.Core(), str(self._export / "model.xml")
        # No pinning: OpenVINO pins its threads to cores by default on Linux, so two
        # processes (a service and a `retrieval index`) pin theirs to the same cores,
        # where the OS cannot move them apart (Intel's note 000058227: inference time
        # doubles with two processes). torch does not pin, and slowed searches 1.9x where
        # OpenVINO slowed them 5.4x (issue 22, item 3).
        config = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
                  "INFERENCE_NUM_THREADS": threads or threads_from_environment()
                  or os.cpu_count() or 1}
        compiled = core.compile_model(xml, "CPU", config)
        self._request = compiled.create_infer_request()
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        self._dim = int(self._info["dim"])
        self._batch_size = batch_size
        self._lock = threading.Lock()  # one infer request; callers may share the embedder

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def spec(self) -> dict[str, Any]:
        return {
            "backend": backend_name(self._precision),
            "model": self._name,
            "fingerprint": self._info["source_fingerprint"],
            "dim": self._dim,
            "max_tokens": self._max_tokens,
            "recipe": self._info["recipe"],
            "export_fingerprint": self._info["export_fingerprint"],
        }

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoding = self._counter.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in encoding.offsets]

    def embed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode(texts)

    def embed_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        # Sorting by length keeps padding, and so wasted compute, small.
        lengths = [len(text) for text in texts]
        order = sorted(range(len(texts)), key=lengths.__getitem__, reverse=True)
        for start, size in batch_shapes(len(order), self._batch_size):
            chosen = order[start : start + size]
            out[chosen] = self._run([texts[i] for i in chosen])
        return out

    def warm_up(self, max_tokens: int) -> None:
        """Runs every input shape that texts of up to `max_tokens` word pieces can take.

        Each shape's kernels are compiled and its buffers kept on first use, which costs
        that call time and the process memory; warming them up front (every batch size
        of `batch_shapes` times every padded length) makes later calls as fast as the
        rest and memory flat from then on. About 1 s for query lengths (64) on 2 cores,
        about 10 s up to the model's limit.
        """
        limit = min(max_tokens, self._max_tokens)
        filler = self._tokenizer.token_to_id("[UNK]") or 0
        for length in padded_lengths(limit):
            for size in batch_sizes(self._batch_size):
                ones = np.ones((size, length), dtype=np.int64)
                self._infer({"input_ids": ones * filler, "attention_mask": ones,
                             "token_type_ids": np.zeros_like(ones)})

    def _run(self, texts: list[str]) -> NDArray[np.float32]:
        feed = padded_feed(self._tokenizer.encode_batch(texts), self._pad_id)
        hidden = self._infer(feed)
        return mean_pool(hidden, feed["attention_mask"])

    def _infer(self, feed: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        """The transformer's last hidden state (b, s, dim) for one tokenized batch."""
        with self._lock:
            # share_inputs: OpenVINO reads the arrays in place instead of copying them
            # first (0.3 ms of a 2 ms query in the service's profile).
            inputs = {k: v for k, v in feed.items() if k in self._inputs}
            hidden = self._request.infer(inputs, share_inputs=True)[0]
        return np.asarray(hidden, dtype=np.float32)


def batch_shapes(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, size) of the model calls for n texts: full batches, then powers of two.

    OpenVINO's CPU plugin keeps kernels and buffers for every input shape it has run
    (several MB each, kept for the life of the process). Sizes from 1 to batch_size
    times 8 padded lengths made up to 256 shapes, and a service that is written to kept
    meeting new ones. Cutting the rest of a batch into powers of two (29 = 16 + 8 + 4 + 1)
    leaves log2(batch_size) + 1 sizes and wastes no compute on padding rows.
    """
    shapes, start = [], 0
    while start < n:
        size = min(batch_size, 1 << ((n - start).bit_length() - 1))
        shapes.append((start, size))
        start += size
    return shapes


def batch_sizes(batch_size: int) -> list[int]:
    """Every batch size `batch_shapes` uses: the powers of two below batch_size, and it."""
    return sorted({min(batch_size, 1 << i) for i in range(batch_size.bit_length() + 1)})


def padded_length(longest: int) -> int:
    """The length a batch is padded to when its longest text has `longest` word pieces."""
    return SHORT_PAD if longest <= SHORT_PAD else -(-longest // PAD_TO) * PAD_TO


def padded_lengths(limit: int) -> list[int]:
    """Every length `padded_length` gives for texts of up to `limit` word pieces."""
    return sorted({padded_length(n) for n in range(1, limit + 1)})


def padded_feed(encodings: Sequence[Any], pad_id: int) -> dict[str, NDArray[np.int64]]:
    """The model's inputs for a batch of unpadded encodings, padded to `padded_length`."""
    length = padded_length(max(len(e.ids) for e in encodings))
    feed = {name: np.zeros((len(encodings), length), dtype=np.int64) for name in INPUTS}
    feed["input_ids"][:] = pad_id
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        feed["input_ids"][row, :n] = encoding.ids
        feed["attention_mask"][row, :n] = encoding.attention_mask
        feed["token_type_ids"][row, :n] = encoding.type_ids
    return feed


def encode_batch(tokenizer: Any, texts: Sequence[str]) -> dict[str, NDArray[np.int64]]:
    """Inputs padded by the tokenizer itself: what the export and its calibration use."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def mean_pool(hidden: NDArray[np.float32], mask: NDArray[np.int64]) -> NDArray[np.float32]:
    """Mean of the token vectors the mask keeps, L2-normalised: (b, s, d) -> (b, d)."""
    weights = mask.astype(np.float32)
    # (b, 1, s) @ (b, s, d): one product per text instead of a masked copy of `hidden`.
    summed = np.matmul(weights[:, None, :], hidden)[:, 0, :]
    summed /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    return np.ascontiguousarray(summed / np.maximum(norms, 1e-12), dtype=np.float32)


def read_max_tokens(model_dir: Path) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text("utf-8")).get("max_seq_length", 512))
    return 512


def check_mean_pooling(model_dir: Path) -> None:
    """Refuses models whose sentence-transformers pipeline is not Transformer + mean pooling."""
    modules = json.loads((model_dir / "modules.json").read_text("utf-8"))
    pooling = [m for m in modules if m["type"].endswith("Pooling")]
    ok = len(pooling) == 1
    if ok:
        config = json.loads((model_dir / pooling[0]["path"] / "config.json").read_text("utf-8"))
        ok = bool(config.get("pooling_mode_mean_tokens")) and not any(
            value for key, value in config.items()
            if key.startswith("pooling_mode_") and key != "pooling_mode_mean_tokens"
        )
    if not ok:
        raise InputError(f"{model_dir}: the OpenVINO backend supports mean-pooling models only")


# -- export ------------------------------------------------------------------------------


def export_key(model_dir: Path, precision: str) -> tuple[str, str]:
    """(source fingerprint, recipe): together they name one export."""
    recipe = f"v{RECIPE_VERSION}"
    if precision == "int8":
        recipe += f"-cal{calibration_digest()}"
    return model_fingerprint(model_dir), recipe


def ensure_export(model_dir: Path, precision: str, cache_dir: Path) -> Path:
    """The cached export of a model, made now (and atomically) if missing."""
    fingerprint, recipe = export_key(model_dir, precision)
    target = cache_dir / f"{fingerprint}-{backend_name(precision)}-{recipe}"
    if (target / "info.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    try:
        logger.info("exporting %s to OpenVINO %s (once; cached in %s)",
                    model_dir, precision, target)
        export(model_dir, tmp, precision=precision)
        info = {
            "source_fingerprint": fingerprint, "recipe": recipe, "precision": precision,
            "export_fingerprint": file_digest(tmp / "model.xml", tmp / "model.bin"),
            "dim": read_dim(tmp / "model.xml"), **library_versions(),
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True), "utf-8")
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "info.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def export(model_dir: Path, out: Path, *, precision: str) -> None:
    """Converts the model's transformer to OpenVINO IR (quantised for int8) in `out`."""
    ov = import_openvino(precision)
    if precision == "int8":
        import_nncf()  # before the conversion's minutes, not after them
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=read_max_tokens(model_dir))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
    transformer = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    torch.manual_seed(0)

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    feed = encode_batch(tokenizer, ["an example", "two"])
    example = {name: torch.from_numpy(array) for name, array in feed.items()}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about Python branches on shapes (dynamic shapes are set below) and
        # about its own deprecation; none of it concerns the exported model.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model = ov.convert_model(LastHiddenState(), example_input=example)
    model.reshape({port.get_any_name(): ov.PartialShape([-1, -1]) for port in model.inputs})
    if precision == "int8":
        model = quantize(model, tokenizer)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)


def quantize(model: Any, tokenizer: Any) -> Any:
    """Static int8 quantisation (weights and activations) calibrated on the fixed texts."""
    nncf = import_nncf()
    texts = calibration_texts()
    feeds = [encode_batch(tokenizer, [text]) for text in texts]
    # NNCF draws its progress bars on standard output, which belongs to the command that
    # happened to export first (`retrieval search --json`, a benchmark's JSON): stderr.
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(
            model,
            nncf.Dataset(feeds),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(feeds),
        )


def import_nncf() -> Any:
    """The nncf module (int8 exports only), or an error naming the extra that installs it."""
    try:
        import nncf
    except ImportError as error:
        raise MissingDependencyError(
            "exporting the openvino-int8 backend", "nncf", "fast", error
        ) from error
    return nncf


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def read_dim(model_xml: Path) -> int:
    import openvino as ov  # export() imported it already

    model = ov.Core().read_model(str(model_xml))
    return int(model.outputs[0].get_partial_shape()[2].get_length())


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("openvino", "nncf", "torch", "transformers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
