"""A sharded collection served on Ray Serve: `retrieval serve --shards DIR --ray ADDRESS`.

The application is one Serve app of N + 1 deployments:

- `shard0` .. `shardN-1`: each a `ShardServer` over its own collection directory, on
  the node whose Ray resources name it (`shard0`, ... given to `ray start --resources`;
  without them, anywhere). Serve balances only across the replicas of one deployment,
  so each shard is its own deployment; its replicas (`--replicas`) add read throughput.
  A shard never loads the model: writes arrive embedded.
- `ingress`: the very FastAPI app of `retrieval serve` (every endpoint, the page,
  /metrics, the API key), built on its replica by `create_app(open_collection=...)`
  over a `ShardedCollection` whose shards are the handles above. Its micro-batcher
  embeds the queries of concurrent requests in one model call; each search is then
  one query phase: one call to every shard, answers merged at the router
  (retrieval/cluster/router.py). Searches run on `INGRESS_SEARCH_THREADS` threads, so
  the rounds of concurrent requests are in flight together; more ingress replicas
  (`--ingress-replicas`) and shard replicas (`--replicas`) add throughput where
  there are cores for them.

Faults: every call to a shard has a deadline (`SHARD_TIMEOUT_S`). A shard with no live
replica (killed, its node gone) fails its calls, or lets them time out, and the request
is answered 503 with Retry-After and a detail naming the shard (ShardUnavailableError);
no request waits longer than the deadline. Serve restarts a dead replica; answers come
back once it is up (a replica reopens its collection from disk: committed data is kept).

Only imported with --ray: Ray is the `ray` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayTaskError

from retrieval.cluster.clients import Pending, ShardClient
from retrieval.cluster.layout import ShardLayout, open_shard, read_layout
from retrieval.cluster.router import ShardedCollection
from retrieval.cluster.shard_server import ShardServer
from retrieval.cluster.traffic import Traffic
from retrieval.errors import RetrievalError, ShardUnavailableError
from service.settings import Settings

logger = logging.getLogger(__name__)

APP_NAME = "retrieval"
# How long the router waits for one shard's answer before calling it unavailable: below
# the service's search deadline (10 s), so the 503 names the shard.
SHARD_TIMEOUT_S = 5.0
# Concurrent calls a shard replica accepts; Serve's default of 5 would queue the fan-out
# of a few concurrent searches at the replica.
SHARD_MAX_ONGOING = 64
# Searches an ingress replica answers at once (Settings.search_threads): each mostly
# waits for its shards' answers, so several keep concurrent requests' rounds in flight.
INGRESS_SEARCH_THREADS = 16


def shard_resource(index: int) -> str:
    """The custom Ray resource that pins shard `index` to the node holding its disk."""
    return f"shard{index}"


class ShardReplica(ShardServer):
    """A shard deployment's replica: opens shard `index` of the layout from its disk."""

    def __init__(self, shards_dir: str, index: int) -> None:
        layout = read_layout(shards_dir)
        super().__init__(open_shard(layout, index), index)

    def node_id(self) -> str:
        """The Ray node this replica runs on (to check where shards were placed)."""
        return str(ray.get_runtime_context().get_node_id())


class RayPending:
    """A shard's answer from Serve, with the deadline and the error mapping."""

    def __init__(self, response: Any, index: int, timeout_s: float) -> None:
        self.response, self.index, self.timeout_s = response, index, timeout_s

    def result(self) -> Any:
        try:
            return self.response.result(timeout_s=self.timeout_s)
        except RayTaskError as error:  # the shard's own code raised
            if isinstance(error.cause, RetrievalError):
                raise error.cause from None  # NotFoundError, InputError...: as on one machine
            raise
        except Exception as error:  # no replica, a dead one, or no answer in time
            raise ShardUnavailableError(
                f"shard {self.index} has no live replica or did not answer within "
                f"{self.timeout_s:g} s ({type(error).__name__}): Ray Serve restarts it; "
                "retry shortly"
            ) from error


class RayShard:
    """A ShardClient over shard `index`'s deployment handle."""

    def __init__(self, handle: Any, index: int, timeout_s: float = SHARD_TIMEOUT_S) -> None:
        self.handle, self.index, self.timeout_s = handle, index, timeout_s

    def call(self, method: str, *args: Any) -> Pending:
        try:
            response = getattr(self.handle, method).remote(*args)
        except Exception as error:  # refused before sending (e.g. back-pressure)
            return RayPending(_Failed(error), self.index, self.timeout_s)
        return RayPending(response, self.index, self.timeout_s)

    def close(self) -> None:
        """Nothing to close here: the shard's replicas live on."""


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def result(self, timeout_s: float | None = None) -> Any:
        raise self.error


class Ingress:
    """The ingress deployment: the service's FastAPI app over Ray shard handles."""

    def __init__(
        self, layout_json: dict[str, Any], shards_dir: str, settings: Settings,
        *shards: Any,
    ) -> None:
        self.layout = ShardLayout.from_json(Path(shards_dir), layout_json)
        self.settings = settings.model_copy(
            update={"search_threads": max(settings.search_threads, INGRESS_SEARCH_THREADS)}
        )
        self.shards = shards
        self.collection: ShardedCollection | None = None

    def __serve_build_asgi_app__(self) -> Any:
        from service.app import create_app

        return create_app(self.settings, open_collection=self.open_collection)

    def open_collection(self, settings: Settings, warm_up_tokens: int) -> ShardedCollection:
        clients: list[ShardClient] = [
            RayShard(handle, index) for index, handle in enumerate(self.shards)
        ]
        collection = ShardedCollection(self.layout, clients)
        embedder = collection.embedder  # loads the model now, not on the first search
        if warm_up_tokens:
            embedder.warm_up(warm_up_tokens)
        self.collection = collection
        return collection

    def traffic(self) -> dict[str, int]:
        """What this replica's router has sent to shards so far (a `Traffic`), for
        `retrieval bench ray`: called through the deployment's handle, not over HTTP."""
        counts = self.collection.traffic.now() if self.collection else Traffic()
        return {"searches": counts.searches, "rounds": counts.rounds, "calls": counts.calls}


def build_app(
    shards_dir: str | Path, settings: Settings, *, replicas: int = 1,
    shard_cpus: float = 0.5, ingress_cpus: float = 1.0, ingress_replicas: int = 1,
) -> Any:
    """The Serve application (unbound to a cluster until `serve.run`).

    Args:
        replicas: replicas per shard.
        ingress_replicas: replicas of the ingress (each loads the model and embeds).
        shard_cpus, ingress_cpus: Ray CPUs each replica reserves (fractions work). The
            ingress runs the model: Ray gives it max(floor(cpus), 1) OpenMP threads.
    """
    layout = read_layout(shards_dir)
    available = ray.cluster_resources()  # type: ignore[no-untyped-call]
    shards = []
    for index in range(layout.n):
        options: dict[str, Any] = {"num_cpus": shard_cpus}
        if shard_resource(index) in available:  # pinned to the node with its disk
            options["resources"] = {shard_resource(index): 0.01}
        shards.append(
            serve.deployment(ShardReplica).options(  # type: ignore[attr-defined]
                name=f"shard{index}", num_replicas=replicas,
                max_ongoing_requests=SHARD_MAX_ONGOING, ray_actor_options=options,
            ).bind(str(layout.path), index)
        )
    ingress = serve.deployment(serve.ingress()(Ingress)).options(  # type: ignore[attr-defined]
        name="ingress", num_replicas=ingress_replicas, max_ongoing_requests=SHARD_MAX_ONGOING,
        ray_actor_options={"num_cpus": ingress_cpus},
    )
    return ingress.bind(layout.to_json(), str(layout.path), settings, *shards)


def run(
    address: str, shards_dir: str | Path, settings: Settings, *, replicas: int = 1,
    shard_cpus: float = 0.5, ingress_cpus: float = 1.0, ingress_replicas: int = 1,
    blocking: bool = True,
) -> None:
    """Connects to the Ray cluster at `address` and deploys the app on HTTP host:port."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    # One HTTP proxy, on the head: the service's address is the head's. (Serve's default,
    # a proxy on every node, suits a load balancer in front; on a one-machine test
    # cluster those proxies would share one port and die with their nodes.)
    serve.start(proxy_location="HeadOnly",
                http_options={"host": settings.host, "port": settings.port})
    app = build_app(shards_dir, settings, replicas=replicas, shard_cpus=shard_cpus,
                    ingress_cpus=ingress_cpus, ingress_replicas=ingress_replicas)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=blocking)
