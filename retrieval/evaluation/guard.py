"""The quality guard: may a faster embedding backend stand in for the exact model?

The exact model is sentence-transformers in fp32 (`torch`). A candidate backend (an
OpenVINO export, int8 or fp32) passes when, on every labelled set of GUARD_SETS and in
every search mode, it is not significantly worse than torch, and the mean of its
nDCG@10 changes over all of them is at least MIN_MEAN_DELTA:

- per set and mode, the per-query nDCG@10 of the two runs are compared by a one-sided
  paired t-test (scipy's `ttest_rel`, alternative "less"): p < ALPHA fails the set;
- a per-set bound on the mean alone ("within 0.005") cannot be honoured by a set of 30
  queries, whose mean moves by more than that on noise; the paired test can, and the
  mean over all sets and modes still catches a small loss spread everywhere.

Each set is an `retrieval eval` command line (docs/evaluation.md's), so a verdict is reproduced
by running those commands with `--backend`. `retrieval guard --backend NAME` runs it and
records the verdict (VERDICTS_FILE in the package, or `--record FILE`); the automatic
backend choice (models/choice.py) considers only candidates whose recorded verdict
passed for the same model and export recipe.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrieval.evaluation.location import datasets_dir
from retrieval.models.cpu import cpu_summary
from retrieval.models.verdicts import VERDICTS_FILE, record_verdict

GUARD_METRIC = "ndcg@10"
ALPHA = 0.05
MIN_MEAN_DELTA = -0.002
REFERENCE = "torch"
MODES = ("dense", "lexical", "hybrid")
DATASETS = datasets_dir()


@dataclass(frozen=True)
class GuardSet:
    """One labelled set: a name and the `retrieval eval` arguments after the folder."""

    name: str
    folder: str
    options: tuple[str, ...] = ()


GUARD_SETS = (
    GuardSet("SciFact", "scifact"),
    GuardSet("Cranfield", "cranfield"),
    GuardSet("MED", "med"),
    GuardSet("SciFact, one passage per document", "scifact", ("--chunking", "none")),
    GuardSet("SQuAD paragraphs", "squad11_dev", ("--squad",)),
    GuardSet("BBC known item", "bbc", ("--known-item", "title")),
)


@dataclass(frozen=True)
class Comparison:
    """One set and mode: the reference's and the candidate's mean, and the paired test."""

    set: str
    mode: str
    queries: int
    reference: float
    candidate: float
    p_worse: float  # one-sided: the chance of a loss this large if there were none

    @property
    def delta(self) -> float:
        return self.candidate - self.reference

    @property
    def worse(self) -> bool:
        return self.p_worse < ALPHA


def paired(set_name: str, mode: str, reference: dict[str, float],
           candidate: dict[str, float]) -> Comparison:
    """Compares two runs' per-query scores over the same judged queries."""
    from scipy.stats import ttest_rel

    queries = sorted(reference)
    ref = [reference[q] for q in queries]
    cand = [candidate.get(q, 0.0) for q in queries]
    differences = {round(b - a, 12) for a, b in zip(ref, cand, strict=True)}
    if len(differences) == 1:
        # The same change on every query (none at all, for lexical search, which does not
        # embed): no spread to test against, a loss is certain and a gain or tie is not one.
        p = 0.0 if differences.pop() < 0 else 1.0
    else:
        p = float(ttest_rel(cand, ref, alternative="less").pvalue)
        p = 1.0 if math.isnan(p) else p
    n = len(queries)
    return Comparison(set_name, mode, n, sum(ref) / n, sum(cand) / n, p)


@dataclass
class Verdict:
    backend: str
    passed: bool
    mean_delta: float
    comparisons: list[Comparison]
    fingerprint: str  # the source model's
    recipe: str  # the export's; another recipe needs another verdict
    cpu: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["comparisons"] = [{**asdict(c), "delta": c.delta} for c in self.comparisons]
        return out


def judge(backend: str, comparisons: list[Comparison]) -> tuple[bool, float]:
    """(passed, mean delta): no comparison significantly worse, mean delta high enough."""
    mean = sum(c.delta for c in comparisons) / len(comparisons)
    return (not any(c.worse for c in comparisons) and mean >= MIN_MEAN_DELTA), mean


def scores_by_mode(guard_set: GuardSet, backend: str, datasets: Path,
                   cache: Path | None) -> dict[str, dict[str, float]]:
    """{mode: {query id: nDCG@10}} for one set, searched with one backend."""
    from retrieval.evaluation import cli as eval_cli
    from retrieval.evaluation.scoring import per_query

    argv = ["eval", str(datasets / guard_set.folder), *guard_set.options,
            "--backend", backend, "--quiet"]
    if cache is not None:
        argv += ["--cache", str(cache)]
    task, runs = eval_cli.runs_of(argv)
    return {mode: per_query(task.qrels, runs[mode], GUARD_METRIC) for mode in MODES}


def run_guard(backend: str, *, datasets: Path = DATASETS, cache: Path | None = None,
              sets: tuple[GuardSet, ...] = GUARD_SETS, log: Any = print) -> Verdict:
    """Scores torch and the candidate on every set and mode, and judges."""
    from retrieval.models.embedding import default_model_path, model_fingerprint
    from retrieval.models.openvino import export_key

    started = time.perf_counter()
    comparisons = []
    for guard_set in sets:
        reference = scores_by_mode(guard_set, REFERENCE, datasets, cache)
        candidate = scores_by_mode(guard_set, backend, datasets, cache)
        for mode in MODES:
            comparison = paired(guard_set.name, mode, reference[mode], candidate[mode])
            log(f"{guard_set.name:36} {mode:8} {comparison.reference:.4f} -> "
                f"{comparison.candidate:.4f}  p(worse) {comparison.p_worse:.3f}")
            comparisons.append(comparison)
    passed, mean = judge(backend, comparisons)
    model_dir = default_model_path()
    precision = backend.removeprefix("openvino-")
    fingerprint, recipe = (export_key(model_dir, precision) if backend != REFERENCE
                           else (model_fingerprint(model_dir), "exact"))
    return Verdict(backend, passed, mean, comparisons, fingerprint, recipe, cpu_summary(),
                   time.perf_counter() - started)


# -- the command ---------------------------------------------------------------------------


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "guard", help="may a faster embedding backend replace torch? (all labelled sets)",
        description="Runs every labelled set (SciFact, Cranfield, MED, SciFact one passage "
        "per document, SQuAD paragraphs, BBC known item) in every mode with torch and with "
        "the candidate, and passes the candidate when no set and mode is significantly "
        f"worse (one-sided paired t-test on per-query {GUARD_METRIC}, p < {ALPHA}) and the "
        f"mean change over all of them is at least {MIN_MEAN_DELTA}.",
    )
    parser.add_argument("--backend", required=True, choices=["openvino-int8", "openvino-fp32"])
    parser.add_argument("--datasets", type=Path, default=DATASETS,
                        help=f"the folder holding the sets (default {DATASETS})")
    parser.add_argument("--cache", type=Path, default=None,
                        help="evaluation collections (default: retrieval eval's)")
    parser.add_argument("--record", type=Path, default=None, metavar="FILE",
                        help=f"add the verdict to FILE (the package's is {VERDICTS_FILE.name})")
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    verdict = run_guard(args.backend, datasets=args.datasets, cache=args.cache,
                        log=lambda line: print(line, file=sys.stderr))
    print(table(verdict))
    if args.record:
        record_verdict(verdict.backend, verdict.as_dict(), args.record)
        print(f"\nrecorded in {args.record}")
    return 0 if verdict.passed else 1


def table(verdict: Verdict) -> str:
    lines = [
        f"# {verdict.backend} against torch: {GUARD_METRIC} per set and mode",
        "",
        f"CPU: {verdict.cpu}; Python {platform.python_version()}; {verdict.seconds:.0f} s",
        "",
        f"| set | mode | queries | torch | {verdict.backend} | change | p (worse) | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in verdict.comparisons:
        mark = "**worse**" if c.worse else "ok"
        lines.append(f"| {c.set} | {c.mode} | {c.queries} | {c.reference:.4f} | "
                     f"{c.candidate:.4f} | {c.delta:+.4f} | {c.p_worse:.3f} | {mark} |")
    outcome = "passes" if verdict.passed else "fails"
    lines += ["", f"Mean change over {len(verdict.comparisons)} sets and modes: "
              f"{verdict.mean_delta:+.4f} (at least {MIN_MEAN_DELTA}); no set and mode "
              f"may be worse at p < {ALPHA}. Verdict: {verdict.backend} **{outcome}**."]
    return "\n".join(lines)
