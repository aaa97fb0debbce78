"""Per-query nDCG@10 of hybrid search on every labelled set of the quality guard, for
comparing ranking options with the guard's rule (retrieval/evaluation/guard.py).

    python scripts/ranking_guard.py OUT.json [--fusion SPEC ...] [--skip FOLDER ...]
    python scripts/ranking_guard.py --compare OLD.json NEW.json

The first form writes {set: {run: {query id: nDCG@10}}} for the engine on PYTHONPATH
(run it once with the old engine, once with the new). The second prints, for every set
and run of NEW, the change against OLD's "hybrid" run and the one-sided paired t-test's
p(worse), as the guard judges a backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from retrieval.evaluation import cli as eval_cli
from retrieval.evaluation.guard import ALPHA, GUARD_METRIC, GUARD_SETS, paired
from retrieval.evaluation.scoring import per_query


def collect(out: Path, fusions: list[str] | None, skip: list[str]) -> None:
    from retrieval.evaluation.guard import DATASETS

    results: dict[str, dict[str, dict[str, float]]] = {}
    for guard_set in GUARD_SETS:
        if guard_set.folder in skip:
            continue
        argv = ["eval", str(DATASETS / guard_set.folder), *guard_set.options,
                "--mode", "hybrid", "--quiet"]
        if fusions:
            argv += ["--fusion", *fusions]
        task, runs = eval_cli.runs_of(argv)
        results[guard_set.name] = {
            name: per_query(task.qrels, run_, GUARD_METRIC) for name, run_ in runs.items()
        }
        means = {n: sum(s.values()) / len(s) for n, s in results[guard_set.name].items()}
        print(guard_set.name, {n: round(m, 4) for n, m in means.items()}, file=sys.stderr)
    out.write_text(json.dumps(results), "utf-8")


def compare(old: Path, new: Path) -> None:
    before, after = json.loads(old.read_text()), json.loads(new.read_text())
    print(f"| set | run | queries | today | new | change | p (worse) | |\n|{'---|' * 8}")
    for set_name, runs in after.items():
        reference = before[set_name]["hybrid"]
        for name, scores in runs.items():
            c = paired(set_name, name, reference, scores)
            mark = "**worse**" if c.worse else "ok"
            print(f"| {set_name} | {name} | {c.queries} | {c.reference:.4f} | "
                  f"{c.candidate:.4f} | {c.delta:+.4f} | {c.p_worse:.3f} | {mark} |")
    print(f"\nworse: p < {ALPHA}, one-sided paired t-test on per-query {GUARD_METRIC}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--fusion", nargs="+", default=None)
    parser.add_argument("--skip", nargs="+", default=[], metavar="FOLDER")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = parser.parse_args(argv)
    if args.compare:
        compare(*args.compare)
    else:
        collect(args.out, args.fusion, args.skip)


if __name__ == "__main__":
    main(sys.argv[1:])
