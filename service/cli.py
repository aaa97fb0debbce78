"""`retrieval serve`: the HTTP service on one collection, run by uvicorn.

Registered as a `retrieval` subcommand through the `retrieval.commands` entry point, so
the library never imports the service. `python -m service` runs the same command.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_USAGE = 0, 2

logger = logging.getLogger(__name__)


def register(commands: Any) -> None:
    """Adds `serve` to the `retrieval` command's subparsers."""
    parser = commands.add_parser(
        "serve", help="serve a collection over HTTP (search API, page, metrics)",
        description="Serve a collection over HTTP on 127.0.0.1: POST /search, the search "
        "page at /, OpenAPI at /docs. Options default to RETRIEVAL_* environment variables.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", type=Path, default=None, metavar="DIR",
                        help="collection directory (default: $RETRIEVAL_COLLECTION, or the "
                        "same default as `retrieval index`)")
    parser.add_argument("--shards", type=Path, default=None, metavar="DIR",
                        help="serve a sharded collection (retrieval shards) instead: in this "
                        "process, or with --ray on a Ray cluster")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="serve --shards on the Ray cluster at ADDRESS (host:port of its "
                        "head, or auto) with Ray Serve; needs the ray extra")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="with --ray: replicas of each shard (default 1)")
    parser.add_argument("--ingress-replicas", type=int, default=1, metavar="N",
                        help="with --ray: replicas of the ingress, each holding the model "
                        "(default 1)")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--api-key", default=None,
                        help="key required to add or delete articles (prefer $RETRIEVAL_API_KEY: "
                        "a command line is visible to other users)")
    parser.add_argument("--batch-window-ms", type=float, default=None,
                        help="micro-batching window (default 2; 0 turns batching off)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="most queries per model call (default 32; 1 turns batching off)")
    parser.add_argument("--warm-up", choices=["none", "queries", "all"], default=None,
                        help="what the model prepares before the service is ready: every "
                        "query shape (default, ~1 s), every shape writes need too (all, "
                        "~10 s, then memory stays flat), or none")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    """Checks the collection exists, then serves it until interrupted."""
    quiet_threads()
    from retrieval.collection.manifest import read_manifest
    from service.settings import Settings

    overrides = {
        "collection": args.collection, "host": args.host, "port": args.port,
        "api_key": args.api_key, "batch_window_ms": args.batch_window_ms,
        "max_batch": args.max_batch, "warm_up": args.warm_up,
    }
    if args.shards is not None:
        overrides["collection"] = args.shards
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if args.ray is not None and args.shards is None:
        print("error: --ray serves a sharded collection: give it with --shards DIR "
              "(retrieval shards split COLLECTION DIR --shards N makes one)", file=sys.stderr)
        return EXIT_USAGE
    if args.shards is not None:
        warn_if_writes_are_open(settings)
        return serve_shards(args, settings)
    if read_manifest(settings.collection.expanduser().resolve()) is None:
        print(f"error: no collection at {settings.collection}: build it first with "
              f"retrieval index seeds/ --collection {settings.collection}", file=sys.stderr)
        return EXIT_USAGE
    warn_if_writes_are_open(settings)
    serve(settings, log_level=args.log_level)
    return EXIT_OK


def serve(settings: Any, *, log_level: str = "info") -> None:
    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=log_level, access_log=log_level == "debug")


def serve_shards(args: argparse.Namespace, settings: Any) -> int:
    """A sharded collection: on Ray Serve with --ray, else every shard in this process."""
    from retrieval.cluster.layout import read_layout

    read_layout(args.shards)  # a clear error now rather than in the service's lifespan
    if args.ray is None:
        import uvicorn

        from retrieval.cluster.router import open_local
        from service.app import create_app

        def open_shards(settings: Any, warm_up_tokens: int) -> Any:
            collection = open_local(settings.collection)
            if warm_up_tokens:
                collection.embedder.warm_up(warm_up_tokens)
            return collection

        app = create_app(settings, open_collection=open_shards)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
        return EXIT_OK
    try:
        from service import ray_serve
    except ImportError as error:
        print(f"error: --ray needs Ray: pip install 'retrieval[ray]' ({error})", file=sys.stderr)
        return EXIT_USAGE
    ray_serve.run(args.ray, args.shards, settings, replicas=args.replicas,
                  ingress_replicas=args.ingress_replicas)
    print(f"serving {args.shards} on Ray at http://{settings.host}:{settings.port}/ "
          "(Ctrl-C stops this command; `serve shutdown` stops the app)", file=sys.stderr)
    return EXIT_OK


def warn_if_writes_are_open(settings: Any) -> None:
    """Warns, in the log and on stderr, when anyone on the network may write.

    Without an API key, writes are open to whoever reaches the port: harmless on a
    loopback address, not on one other machines can reach.
    """
    has_key = settings.api_key is not None and settings.api_key.get_secret_value()
    if has_key or is_loopback(settings.host):
        return
    message = (
        f"WARNING: listening on {settings.host} without an API key: anyone who can reach "
        f"port {settings.port} can add and delete articles. Set RETRIEVAL_API_KEY (or "
        "--api-key) to require a key for writes, or listen on 127.0.0.1."
    )
    logger.warning(message)
    print(message, file=sys.stderr)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: addresses no other machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def quiet_threads() -> None:
    """Thread settings for two cores shared by the model and FAISS (docs/performance.md).

    Must run before torch or FAISS is imported: OpenMP reads them once. PASSIVE makes
    idle OpenMP threads sleep instead of spinning on the cores the other one needs.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    """`python -m service`: the same as `retrieval serve`."""
    parser = argparse.ArgumentParser(prog="python -m service", description="serve a collection")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from retrieval.errors import RetrievalError

    try:
        return run(args)
    except RetrievalError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
