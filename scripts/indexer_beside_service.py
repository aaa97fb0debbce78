"""Search latency while a second process indexes (issue 22, item 3), idle against busy.

    python scripts/indexer_beside_service.py [--rounds 2] [--seconds 20]

A service over the first 300 BBC articles (the defaults: hybrid, collapsed) takes 32
concurrent searchers (wrk, BBC headlines). Each round measures an idle phase, then a
busy one in which `retrieval index --batch-size 2` adds the next articles from a second
process and an HTTP writer posts an article every second. It prints each phase's p50,
p99, QPS and errors, and each round's busy/idle p99 (the issue's goal: at most 2x).
Needs wrk (Debian's package).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2

from retrieval.evaluation.location import bbc_corpus
from service.bench.defaults import wrk, wrk_script
from service.bench.loadtest import free_port, server_process

SERVED, INDEXED_PER_ROUND = 300, 600
WARM_S = 5.0  # the indexer loads its model before it writes


def lines(path: Path, start: int, stop: int) -> list[str]:
    with path.open(encoding="utf-8") as corpus:
        return [line for i, line in enumerate(corpus) if start <= i < stop]


def post_every_second(url: str, stop: threading.Event, tag: str) -> int:
    posted = 0
    while not stop.wait(1.0):
        article = {"id": f"posted-{tag}-{posted}", "title": "Harbour reopens after storm",
                   "text": f"The harbour reopened on day {posted} after storm damage was repaired."}
        httpx2.post(f"{url}/articles", json={"articles": [article]}, timeout=30)
        posted += 1
    return posted


def busy_phase(url: str, collection: Path, articles: Path, script: Path, seconds: float,
               tag: str) -> dict[str, object]:
    indexer = subprocess.Popen(
        [sys.executable, "-m", "retrieval", "index", str(articles), "--collection",
         str(collection), "--batch-size", "2", "--quiet"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    stop = threading.Event()
    writer = threading.Thread(target=post_every_second, args=(url, stop, tag))
    try:
        time.sleep(WARM_S)
        writer.start()
        result = wrk(url, script, connections=32, seconds=seconds)
        result["indexer_still_running"] = indexer.poll() is None
        return result
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        indexer.terminate()
        indexer.wait()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    corpus = bbc_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        served = work / "served.jsonl"
        served.write_text("".join(lines(corpus, 0, SERVED)), "utf-8")
        collection = work / "collection"
        subprocess.run([sys.executable, "-m", "retrieval", "index", str(served),
                        "--collection", str(collection), "--quiet"], check=True)
        headlines = [json.loads(line)["title"] for line in lines(corpus, 0, 300)]
        script = work / "search.lua"
        script.write_text(wrk_script(headlines), "utf-8")
        port = free_port()
        command = [sys.executable, "-m", "service", "--collection", str(collection),
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        with server_process(command, port) as url:
            wrk(url, script, connections=32, seconds=5)  # warm-up
            for r in range(args.rounds):
                start = SERVED + r * INDEXED_PER_ROUND
                batch = work / f"round-{r}.jsonl"
                batch.write_text("".join(lines(corpus, start, start + INDEXED_PER_ROUND)), "utf-8")
                idle = wrk(url, script, connections=32, seconds=args.seconds)
                busy = busy_phase(url, collection, batch, script, args.seconds, str(r))
                ratio = busy["p99_ms"] / idle["p99_ms"]  # type: ignore[operator]
                print(json.dumps({"round": r, "idle": idle, "busy": busy,
                                  "p99_busy_over_idle": round(ratio, 2)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
