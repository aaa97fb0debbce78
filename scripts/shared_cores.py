"""Query latency while a second process embeds, with OpenVINO's threads pinned or not.

    python scripts/shared_cores.py                  # 3 interleaved rounds, 15 s phases
    python scripts/shared_cores.py --rounds 5 --seconds 30

Issue 22, item 3: a service's search p99 grew 5.4x while `retrieval index` ran in a second
process on the same 2 cores with OpenVINO, 1.9x with torch. OpenVINO pins its inference
threads to cores by default on Linux, so two processes pin theirs to the same cores.
This embeds lone short queries (as a lone search does) in one process, first alone and
then while another process embeds passages two at a time (as `retrieval index
--batch-size 2` does), both with every core's thread, pinned (OpenVINO's default, set
here again) and unpinned (the embedder's setting since). Rounds alternate the two, so
other load on the machine falls on both. It prints p50/p99 of a query embedding and
the texts the second process embedded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PRECISION = "fp32"  # the backend of the AVX2 machine
WARM_S = 10.0  # the second process loads its libraries and the model before it embeds


def child(role: str, pin: bool, seconds: float) -> dict[str, float]:
    """One process: `search` times lone queries, `index` embeds passages two at a time."""
    import openvino as ov

    compile_model = ov.Core.compile_model

    def pinned_or_not(self: object, model: object, device: str, config: dict[str, object]
                      ) -> object:
        return compile_model(self, model, device, {**config, "ENABLE_CPU_PINNING": pin})

    ov.Core.compile_model = pinned_or_not  # the comparison: overrides the embedder's setting
    from retrieval.models.calibration import N_PASSAGES, calibration_texts
    from retrieval.models.openvino import OpenVinoEmbedder

    embedder = OpenVinoEmbedder(precision=PRECISION)
    texts = calibration_texts()
    passages, queries = texts[:N_PASSAGES], [q[:60] for q in texts[N_PASSAGES:]]
    embedder.warm_up(64)
    end = time.monotonic() + seconds
    if role == "index":
        done = 0
        while time.monotonic() < end:
            start = done % (len(passages) - 1)
            embedder.embed_documents(passages[start : start + 2])
            done += 2
        return {"embedded": done}
    times = []
    while time.monotonic() < end:
        started = time.perf_counter()
        embedder.embed_queries([queries[len(times) % len(queries)]])
        times.append(time.perf_counter() - started)
        time.sleep(0.005)  # a searcher's think time: the other process gets its turns
    times.sort()
    return {"queries": len(times), "p50_ms": 1000 * statistics.median(times),
            "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))]}


def spawn(role: str, pin: bool, seconds: float) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--role", role, "--pin", str(int(pin)),
               "--seconds", str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = process.communicate()
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0, help="each phase's length")
    parser.add_argument("--role", choices=("search", "index"), help=argparse.SUPPRESS)
    parser.add_argument("--pin", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        print(json.dumps(child(args.role, bool(args.pin), args.seconds)))
        return
    print(f"openvino-{PRECISION}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at the start")
    print("| round | threads | alone p50 / p99 ms | beside an indexer p50 / p99 ms | "
          "texts the indexer embedded |")
    print("|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        for pin in (True, False):
            alone = result(spawn("search", pin, args.seconds))
            indexer = spawn("index", pin, args.seconds + 2 * WARM_S)
            time.sleep(WARM_S)
            busy = result(spawn("search", pin, args.seconds))
            embedded = result(indexer)["embedded"]
            print(f"| {round_} | {'pinned' if pin else 'unpinned'} | "
                  f"{alone['p50_ms']:.1f} / {alone['p99_ms']:.1f} | "
                  f"{busy['p50_ms']:.1f} / {busy['p99_ms']:.1f} | {embedded:.0f} |")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
