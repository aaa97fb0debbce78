"""Serves one collection with two versions of the code in turn, under the same wrk load.

    python scripts/compare_servers.py DIR SECONDS ROUNDS PYTHONPATH=/work/main PYTHONPATH=.

Each argument after ROUNDS is a server's environment (KEY=VALUE,...); the servers take
turns ROUNDS times, each answering wrk at concurrency 1 and 32 for SECONDS. m1 and L of
the collection's own embedder are measured before and after, so a busy machine shows.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from service.bench import loadtest
from service.bench.defaults import model_limits, wrk, wrk_script


def main() -> None:
    collection, seconds, rounds = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    configs = sys.argv[4:]
    queries = loadtest.load_queries(loadtest.BBC)
    script = Path(tempfile.mkdtemp()) / "search.lua"
    script.write_text(wrk_script(queries), "utf-8")
    print("model", model_limits(collection, queries), "load", os.getloadavg(), flush=True)
    base = dict(os.environ)
    for r in range(rounds):
        for config in configs:
            os.environ.clear()
            os.environ.update(base)
            os.environ.update(kv.split("=", 1) for kv in config.split(","))
            with loadtest.running_server(collection, batch_window_ms=2.0, max_batch=32) as url:
                wrk(url, script, connections=4, seconds=3)
                out = []
                for c in (1, 32):
                    x = wrk(url, script, connections=c, seconds=seconds)
                    out.append(f"c{c} p50 {x['p50_ms']:.2f} p99 {x['p99_ms']:.1f} "
                               f"qps {x['qps']:.1f} err {x['errors']}")
            print(f"round {r} {config:28s} " + " | ".join(out), flush=True)
    print("model", model_limits(collection, queries), "load", os.getloadavg(), flush=True)


if __name__ == "__main__":
    main()
