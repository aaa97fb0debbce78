"""The embedding backend of new collections: the fastest one that passed the guard, here.

Which backend is fastest depends on the CPU: on one with AVX-512 VNNI, OpenVINO int8
embeds a query several times faster than torch; on AVX2 alone it gains far less. So
the choice is measured, not assumed: on first use each candidate that may stand in for
the exact model (torch always; another only if its recorded guard verdict passed for
this model and export recipe, retrieval/evaluation/guard.py) embeds the same texts, and the one
with the
best score wins. The choice is cached beside the model exports, keyed by the model, the
CPU and the libraries, so it is made once per machine; `retrieval info` says what was
chosen and why, and `retrieval info --remeasure` makes it again.

A choice records how noisy its measurement was: the load average when it began, and for
each backend how far its rounds spread. A first choice made while the machine was busy
(the first `make serve` measured during a large install) says so, and can be remade.

The score is the geometric mean of three speed-ups over torch, each of which a news
service pays for: one short query embedded alone (what a lone search waits for),
short queries embedded together (what the service does under concurrent load: its
micro-batches) and passages embedded in batches (what ingest waits for). They can
disagree: on an AVX2-only EPYC torch embedded 32 headlines at once 2.4x faster than
OpenVINO fp32, while fp32 answered a lone query 1.6x faster.

A collection records its backend in its manifest and is always queried with it, so a
choice made here never changes the vectors of an existing collection.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from retrieval.models.cpu import cpu_info, cpu_summary

logger = logging.getLogger(__name__)

CANDIDATES = ("torch", "openvino-int8", "openvino-fp32")
QUERY_SAMPLES = 40
QUERY_BATCH = 32  # the service's largest micro-batch (service.settings max_batch)
PASSAGE_SAMPLES = 64
ROUNDS = 3  # turns each candidate takes (its best counts)
CHOICE_VERSION = 3  # bump when the measurement changes: earlier choices are then remade
# A measurement is called noisy when some backend's rounds differ by more than this
# (worst against best, in any of the three speeds) ...
NOISY_SPREAD = 0.2
# ... or when the machine's load average was above this share of its CPUs as it began.
NOISY_LOAD_PER_CPU = 0.5


@dataclass(frozen=True)
class Speed:
    query_ms: float  # median of single short queries
    passages_per_s: float  # PASSAGE_SAMPLES news-like passages in batches
    queries_per_s: float  # QUERY_BATCH short queries in one call


@dataclass(frozen=True)
class Noise:
    """How much the machine disturbed a measurement."""

    load_average: float  # 1-minute load average as the measurement began
    cpus: int
    spread: dict[str, float]  # per backend: (worst - best) / best of a speed over the rounds

    def noisy(self) -> bool:
        return (max(self.spread.values(), default=0.0) > NOISY_SPREAD
                or self.load_average > NOISY_LOAD_PER_CPU * self.cpus)

    def describe(self) -> str:
        spreads = ", ".join(f"{name} {100 * value:.0f}%" for name, value in self.spread.items())
        verdict = ("noisy: remake it on a quiet machine with `retrieval info --remeasure`"
                   if self.noisy() else "quiet")
        return (f"load average {self.load_average:.2f} on {self.cpus} CPUs, rounds differing "
                f"by up to {spreads}; {verdict}")


@dataclass(frozen=True)
class Choice:
    backend: str
    speeds: dict[str, Speed]  # every candidate measured (its best round)
    cpu: str
    made: str  # when, UTC
    noise: Noise | None = None  # None: not measured, or chosen before noise was recorded

    def reason(self) -> str:
        """What `retrieval info` prints."""
        if not self.speeds:
            return f"{self.backend}, {self.made}"
        parts = [f"{name} {s.query_ms:.1f} ms/query, {s.queries_per_s:.0f} queries/s in "
                 f"batches, {s.passages_per_s:.0f} passages/s" for name, s in self.speeds.items()]
        noise = (self.noise.describe() if self.noise is not None
                 else "noise not recorded: `retrieval info --remeasure` records it")
        return (f"{self.backend}, the fastest on this CPU ({self.cpu}) of the backends that "
                f"passed the quality guard, measured {self.made}: " + "; ".join(parts)
                + f" ({noise})")


def default_choice_dir() -> Path:
    """Beside the model exports (openvino.default_cache_dir)."""
    from retrieval.models.openvino import default_cache_dir

    return default_cache_dir()


def eligible(model_dir: Path) -> list[str]:
    """The candidates installed here that may replace torch for this model."""
    from retrieval.models.verdicts import passed

    names = ["torch"]
    if not (find_spec("openvino") and find_spec("nncf")):
        return names
    from retrieval.models.openvino import export_key

    for name in CANDIDATES[1:]:
        fingerprint, recipe = export_key(model_dir, name.removeprefix("openvino-"))
        if passed(name, fingerprint, recipe):
            names.append(name)
        else:
            logger.info("%s has no passing guard verdict for this model: not a candidate", name)
    return names


def choice_path(model_dir: Path, names: list[str], directory: Path) -> Path:
    """The cache file for this model, this CPU, these libraries and these candidates."""
    from retrieval.models.embedding import model_fingerprint

    key = {"version": CHOICE_VERSION, "model": model_fingerprint(model_dir), "cpu": cpu_info(),
           "candidates": names, "libraries": {n: _version(n) for n in ("torch", "openvino")}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return directory / f"backend-choice-{digest}.json"


def chosen_backend(model_dir: Path, *, directory: Path | None = None,
                   measure: Callable[[list[str], Path], dict[str, list[Speed]]] | None = None,
                   remeasure: bool = False) -> Choice:
    """The cached choice for this model and machine, measured now if there is none.

    Two processes starting at once measure once: the second waits for the first's file.
    `remeasure` measures again and replaces the cached choice (`retrieval info --remeasure`).
    """
    names = eligible(model_dir)
    directory = directory or default_choice_dir()
    path = choice_path(model_dir, names, directory)
    cached = None if remeasure else read_choice(path)
    if cached is not None:
        return cached
    if names == ["torch"]:
        return Choice("torch", {}, cpu_summary(), "without measuring: the only candidate")
    directory.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent first use measures meanwhile
        cached = None if remeasure else read_choice(path)
        if cached is not None:
            return cached
        logger.warning("choosing the embedding backend for this CPU among %s (once per "
                       "machine; cached in %s)", ", ".join(names), path)
        choice = measured_choice(names, model_dir, measure or measure_speeds)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(choice), indent=2), "utf-8")
        tmp.replace(path)
    if choice.noise is not None and choice.noise.noisy():
        logger.warning("the backend choice was measured on a busy machine (%s)",
                       choice.noise.describe())
    return choice


def measured_choice(names: list[str], model_dir: Path,
                    measure: Callable[[list[str], Path], dict[str, list[Speed]]]) -> Choice:
    """Measures the candidates: each keeps its best round; the spread of rounds is noise."""
    load_average = os.getloadavg()[0]
    rounds = measure(names, model_dir)
    speeds = {name: best_round(measured) for name, measured in rounds.items()}
    noise = Noise(round(load_average, 2), os.cpu_count() or 1,
                  {name: round(spread(measured), 3) for name, measured in rounds.items()})
    return Choice(best(speeds), speeds, cpu_summary(),
                  time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), noise)


def best_round(measured: list[Speed]) -> Speed:
    """The best of each speed over the rounds: what the backend does undisturbed."""
    return Speed(min(s.query_ms for s in measured), max(s.passages_per_s for s in measured),
                 max(s.queries_per_s for s in measured))


def spread(measured: list[Speed]) -> float:
    """The largest (worst - best) / best of the three speeds over the rounds."""
    pairs = [(max(s.query_ms for s in measured), min(s.query_ms for s in measured))]
    for field in ("passages_per_s", "queries_per_s"):
        values = [getattr(s, field) for s in measured]
        pairs.append((max(values), min(values)))  # time per item: the slowest over the fastest
    return max(slow / fast - 1 for slow, fast in pairs)


def read_choice(path: Path) -> Choice | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text("utf-8"))
    speeds = {name: Speed(**s) for name, s in data["speeds"].items()}
    noise = Noise(**data["noise"]) if data.get("noise") else None  # older files have none
    return Choice(data["backend"], speeds, data["cpu"], data["made"], noise)


def cached_choice(model_dir: Path, directory: Path | None = None) -> Choice | None:
    """The choice if one was made on this machine, without measuring (for `info`)."""
    names = eligible(model_dir)
    return read_choice(choice_path(model_dir, names, directory or default_choice_dir()))


def best(speeds: dict[str, Speed]) -> str:
    """The backend with the best geometric mean of its three speed-ups over torch."""
    base = speeds["torch"]

    def score(s: Speed) -> float:
        product = ((base.query_ms / s.query_ms) * (s.queries_per_s / base.queries_per_s)
                   * (s.passages_per_s / base.passages_per_s))
        return math.pow(product, 1 / 3)

    return max(speeds, key=lambda name: (score(speeds[name]), name == "torch"))


def measure_speeds(names: list[str], model_dir: Path) -> dict[str, list[Speed]]:
    """Embeds the fixed calibration texts (news-like passages and queries) with each backend.

    The backends take turns, ROUNDS times, and the speeds of every round come back: each
    keeps its best (`best_round`), so a machine busy with other work slows every
    candidate alike instead of the one measured at that moment (a first choice made
    during a large install had picked fp32 for a backend measured while the install ran).
    """
    from retrieval.models.backends import make_embedder
    from retrieval.models.calibration import N_PASSAGES, calibration_texts

    texts = calibration_texts()
    passages, queries = texts[:PASSAGE_SAMPLES], texts[N_PASSAGES:][:QUERY_SAMPLES]
    embedders = {name: make_embedder(name, model_dir) for name in names}
    for embedder in embedders.values():
        embedder.warm_up(64)
        embedder.embed_documents(passages)  # compiles the shapes these batches take: not timed
    rounds: dict[str, list[Speed]] = {name: [] for name in names}
    for _ in range(ROUNDS):
        for name, embedder in embedders.items():
            timings = []
            for query in queries:
                started = time.perf_counter()
                embedder.embed_queries([query])
                timings.append(time.perf_counter() - started)
            started = time.perf_counter()
            embedder.embed_queries(queries[:QUERY_BATCH])
            batch_s = time.perf_counter() - started
            started = time.perf_counter()
            embedder.embed_documents(passages)
            seconds = time.perf_counter() - started
            rounds[name].append(Speed(round(1000 * statistics.median(timings), 3),
                                      round(len(passages) / seconds, 1),
                                      round(QUERY_BATCH / batch_s, 1)))
    return rounds


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
