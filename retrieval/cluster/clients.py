"""How the router reaches a shard: `ShardClient`, and `LocalShard` for one in process.

service/ray_serve.py's client reaches a Ray Serve deployment instead. Calls are
submitted to every shard first and collected after (`Pending`), so remote shards work
in parallel; a shard that cannot answer raises `ShardUnavailableError`.
"""

from __future__ import annotations

from typing import Any, Protocol

from retrieval.cluster.shard_server import ShardServer


class Pending(Protocol):
    """A shard's answer on its way."""

    def result(self) -> Any:
        """The answer; raises the shard's error, or ShardUnavailableError."""
        ...


class ShardClient(Protocol):
    """How the router reaches one shard: `call` a `ShardServer` method by name."""

    def call(self, method: str, *args: Any) -> Pending: ...

    def close(self) -> None: ...


class Done:
    """An answer computed already (a local shard answers at once)."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class LocalShard:
    """A shard in this process: its ShardServer called directly."""

    def __init__(self, server: ShardServer) -> None:
        self.server = server

    def call(self, method: str, *args: Any) -> Pending:
        try:
            return Done(getattr(self.server, method)(*args))
        except Exception as error:  # raised when collected, like a remote shard's
            return Done(error=error)

    def close(self) -> None:
        self.server.close()
