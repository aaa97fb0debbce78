"""Python client of the retrieval service: the same hits as the in-process Retriever, over HTTP.

    with RetrievalClient("http://127.0.0.1:8000") as client:
        for hit in client.search("phone call between two presidents", k=3):
            print(hit.rank, round(hit.score, 3), hit.title)

`RetrievalClient` and `AsyncRetrievalClient` return the library's own frozen dataclasses
(`Hit`, `Passage`, `Article`) and take the library's search options (same names, same
defaults), so `RetrievalClient` satisfies `retrieval.search.retriever.Searcher` and
evaluation code scores it exactly like a `Retriever`. Every failure (an error answer of
the server, a timeout, a refused connection, an answer that is not the service's) raises
one type, `RetrievalClientError`, carrying the server's message.

This module imports only httpx2, the standard library, `retrieval.records`,
`retrieval.errors` and `retrieval.search.options` (standard library only): `pip install
'retrieval[client]'` brings no torch, FAISS or numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx2

from retrieval.errors import RetrievalError
from retrieval.records import Article, Filters, Hit, Passage, RelatedArticle, Span
from retrieval.search.options import DEFAULTS, Mode, SearchOptions, Sort

__all__ = ["AsyncRetrievalClient", "RetrievalClient", "RetrievalClientError"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 10.0
API_KEY_HEADER = "X-API-Key"

T = TypeVar("T")


class RetrievalClientError(RetrievalError):
    """A call to the service failed.

    Attributes:
        status_code: the HTTP status of the server's error answer; None when no answer
            came (timeout, connection refused) or the answer could not be read.
        detail: the server's message (its `detail`), or what went wrong on the way.
    """

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        self.detail = detail
        self.status_code = status_code
        super().__init__(f"{status_code}: {detail}" if status_code is not None else detail)


# -- calls: what to send and how to read the answer, shared by both clients --------------


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request to the service and the function that turns its JSON answer into T."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: dict[str, Any] | None = None


def search_call(query: str, options: SearchOptions) -> Call[list[Hit]]:
    return Call("POST", "/search", parse_search, {"query": query, **options_json(options)})


def batch_call(queries: Sequence[str], options: SearchOptions) -> Call[list[list[Hit]]]:
    if isinstance(queries, str):
        raise RetrievalClientError("search_batch takes a list of queries, not one string")
    body = {"queries": list(queries), **options_json(options)}
    return Call("POST", "/search/batch", parse_batch, body)


def options_json(options: SearchOptions) -> dict[str, Any]:
    """The request's option fields: k and mode always, the others when not the default.

    Both ends take their defaults from `SearchOptions`; leaving the defaults out keeps
    this client talking to a server that predates an option.
    """
    body: dict[str, Any] = {"k": options.k, "mode": options.mode}
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if field.name not in body and value != getattr(DEFAULTS, field.name):
            body[field.name] = filters_json(value) if field.name == "filters" else value
    return body


def related_call(article_id: str, k: int) -> Call[list[RelatedArticle]]:
    return Call("GET", f"{item_path('articles', article_id)}/related?k={int(k)}", parse_related)


def filters_json(filters: Filters | None) -> dict[str, Any] | None:
    if filters is None or filters.is_empty():
        return None
    return {
        "article_ids": list(filters.article_ids) if filters.article_ids is not None else None,
        "sources": list(filters.sources) if filters.sources is not None else None,
        "date_from": filters.date_from,
        "date_to": filters.date_to,
    }


def article_json(article: Article) -> dict[str, Any]:
    return dataclasses.asdict(article)


def item_path(kind: str, item_id: str | int) -> str:
    # Quoted whole, "/" included: an id is one path segment.
    return f"/{kind}/{quote(str(item_id), safe='')}"


# Optional in an answer: a server that predates them sends none.
OPTIONAL_HIT_FIELDS = ("highlight", "duplicates", "duplicate_ids")
HIT_FIELDS = tuple(f.name for f in dataclasses.fields(Hit) if f.name not in OPTIONAL_HIT_FIELDS)


def parse_hit(data: Any) -> Hit:
    """A Hit from its JSON, with its best sentence's span when the search marked it, and
    the copies it stands for when the search was collapsed."""
    values = require(data, HIT_FIELDS, "hit")
    values["score"] = float(values["score"])
    span = data.get("highlight")
    if isinstance(span, dict):
        values["highlight"] = Span(**require(span, ("start", "end"), "highlight"))
    copies = data.get("duplicate_ids")
    if isinstance(copies, list):
        values["duplicate_ids"] = tuple(str(article_id) for article_id in copies)
        values["duplicates"] = int(data.get("duplicates") or len(copies))
    return Hit(**values)


def parse_search(data: Any) -> list[Hit]:
    hits = require(data, ("hits",), "search answer")["hits"]
    return [parse_hit(hit) for hit in require_list(hits, "hits")]


def parse_batch(data: Any) -> list[list[Hit]]:
    results = require(data, ("results",), "batch answer")["results"]
    return [parse_search(result) for result in require_list(results, "results")]


RELATED_FIELDS = tuple(f.name for f in dataclasses.fields(RelatedArticle))


def parse_related(data: Any) -> list[RelatedArticle]:
    related = require(data, ("related",), "related answer")["related"]
    articles = []
    for item in require_list(related, "related articles"):
        values = require(item, RELATED_FIELDS, "related article")
        values["score"] = float(values["score"])
        articles.append(RelatedArticle(**values))
    return articles


def parse_passage(data: Any) -> Passage:
    if isinstance(data, dict) and "id" not in data and "passage_id" in data:
        data = {**data, "id": data["passage_id"]}
    fields = tuple(f.name for f in dataclasses.fields(Passage))
    return Passage(**require(data, fields, "passage"))


def parse_article(data: Any) -> Article:
    values = require(data, ("id", "title", "text", "date", "source", "url"), "article")
    return Article(**values, metadata=dict(data.get("metadata") or {}))


def parse_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RetrievalClientError(f"expected a JSON object from the server, got {data!r:.200}")
    return data


def require(data: Any, fields: Sequence[str], what: str) -> dict[str, Any]:
    """The named fields of a JSON object; a RetrievalClientError if any is missing."""
    if not isinstance(data, dict):
        raise RetrievalClientError(f"expected a {what} object from the server, got {data!r:.200}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise RetrievalClientError(f"the server's {what} lacks {', '.join(missing)}")
    return {name: data[name] for name in fields}


def require_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise RetrievalClientError(f"expected a list of {what} from the server, got {value!r:.200}")
    return value


# -- answers and failures ---------------------------------------------------------------


def decode(response: httpx2.Response) -> Any:
    """The JSON of a success answer; a RetrievalClientError with the server's detail otherwise."""
    if response.is_error:
        raise RetrievalClientError(error_detail(response), status_code=response.status_code)
    try:
        return response.json()
    except ValueError as exc:
        raise RetrievalClientError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with something that is not JSON: {response.text[:200]!r}"
        ) from exc


def error_detail(response: httpx2.Response) -> str:
    """The server's `detail` as one readable line (FastAPI's 422 detail is a list)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list) and detail:
        return "; ".join(validation_message(item) for item in detail)
    return response.text[:500] or response.reason_phrase or f"HTTP {response.status_code}"


def validation_message(item: Any) -> str:
    """`filters.date_from: Input should be a valid date` from one pydantic error."""
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
    message = str(item.get("msg", item))
    return f"{'.'.join(loc)}: {message}" if loc else message


def transport_error(exc: httpx2.HTTPError, url: str, timeout: float | None) -> RetrievalClientError:
    if isinstance(exc, httpx2.TimeoutException):
        within = f"within {timeout} s" if timeout is not None else "in time"
        return RetrievalClientError(f"no answer from {url} {within} ({type(exc).__name__})")
    return RetrievalClientError(f"could not reach {url}: {exc or type(exc).__name__}")


class BaseClient:
    """What both clients share: where the service is, the key, the timeout."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _url(self, call: Call[Any]) -> str:
        return self.base_url + call.path

    def _options(self, call: Call[Any]) -> dict[str, Any]:
        """Keyword arguments of the request; `timeout` only when this client sets one."""
        options: dict[str, Any] = {"json": call.body}
        if self.api_key:
            options["headers"] = {API_KEY_HEADER: self.api_key}
        if self.timeout is not None:
            options["timeout"] = self.timeout
        return options

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


# -- the clients ------------------------------------------------------------------------


class RetrievalClient(BaseClient):
    """Searches a running retrieval service.

    Args:
        base_url: where the service listens; requests go to `base_url + path`.
        api_key: sent as X-API-Key; the server needs it for writes when it has one set.
        timeout: seconds to wait for each answer (connect, read and write); 10 by
            default. With `http` given and no timeout, that client's own timeout holds
            (starlette's TestClient warns when a request sets one).
        http: an httpx2.Client to send through (its transport, pool, proxies); for
            example starlette's `TestClient(app)` to call an app in process. The caller
            closes it; a client made here is closed by `close()`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        http: httpx2.Client | None = None,
    ) -> None:
        if http is None and timeout is None:
            timeout = DEFAULT_TIMEOUT_S
        super().__init__(base_url, api_key, timeout)
        self._owns_http = http is None
        self._http = http if http is not None else httpx2.Client(timeout=timeout)

    def search(
        self,
        query: str,
        k: int = DEFAULTS.k,
        *,
        mode: Mode = DEFAULTS.mode,
        filters: Filters | None = DEFAULTS.filters,
        max_per_article: int | None = DEFAULTS.max_per_article,
        offset: int = DEFAULTS.offset,
        highlight: bool = DEFAULTS.highlight,
        min_score: float | None = DEFAULTS.min_score,
        recency_half_life_days: float | None = DEFAULTS.recency_half_life_days,
        now: str | None = DEFAULTS.now,
        sort: Sort = DEFAULTS.sort,
        collapse: bool = DEFAULTS.collapse,
    ) -> list[Hit]:
        """The k passages closest to the query, best first: the options, their names
        and defaults are `Retriever.search`'s (`retrieval.search.options.SearchOptions`).

        Raises:
            RetrievalClientError: the server refused the query (status 4xx, its message),
                failed, or could not be reached in time (status None).
        """
        options = SearchOptions(k, mode, filters, max_per_article, offset, highlight, min_score,
                                recency_half_life_days, now, sort, collapse)
        call = search_call(query, options)
        return self._send(call)

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = DEFAULTS.k,
        *,
        mode: Mode = DEFAULTS.mode,
        filters: Filters | None = DEFAULTS.filters,
        max_per_article: int | None = DEFAULTS.max_per_article,
        offset: int = DEFAULTS.offset,
        highlight: bool = DEFAULTS.highlight,
        min_score: float | None = DEFAULTS.min_score,
        recency_half_life_days: float | None = DEFAULTS.recency_half_life_days,
        now: str | None = DEFAULTS.now,
        sort: Sort = DEFAULTS.sort,
        collapse: bool = DEFAULTS.collapse,
    ) -> list[list[Hit]]:
        """`search` for several queries in one request: one list of hits per query."""
        options = SearchOptions(k, mode, filters, max_per_article, offset, highlight, min_score,
                                recency_half_life_days, now, sort, collapse)
        call = batch_call(queries, options)
        return self._send(call)

    def passage(self, passage_id: int) -> Passage:
        """One stored passage. Raises RetrievalClientError (status 404) for an unknown id."""
        return self._send(Call("GET", item_path("passages", passage_id), parse_passage))

    def article(self, article_id: str) -> Article:
        """One stored article, whole. Raises RetrievalClientError (404) for an unknown id."""
        return self._send(Call("GET", item_path("articles", article_id), parse_article))

    def related(self, article_id: str, k: int = 10) -> list[RelatedArticle]:
        """The k articles closest to a stored one (see `Retriever.related`).

        Raises RetrievalClientError (status 404) for an unknown id.
        """
        return self._send(related_call(article_id, k))

    def add_articles(self, articles: Sequence[Article]) -> dict[str, Any]:
        """Adds or updates articles; returns the server's counts (added, updated, ...)."""
        body = {"articles": [article_json(a) for a in articles]}
        return self._send(Call("POST", "/articles", parse_dict, body))

    def delete_article(self, article_id: str) -> int:
        """Deletes an article; returns how many passages went with it."""
        answer = self._send(Call("DELETE", item_path("articles", article_id), parse_dict))
        return int(require(answer, ("passages_removed",), "delete answer")["passages_removed"])

    def health(self) -> dict[str, Any]:
        """GET /healthz: the process is up."""
        return self._send(Call("GET", "/healthz", parse_dict))

    def ready(self) -> dict[str, Any]:
        """GET /readyz: the collection is loaded; a 503 raises RetrievalClientError."""
        return self._send(Call("GET", "/readyz", parse_dict))

    def stats(self) -> dict[str, Any]:
        """GET /stats: counts of articles and passages, model, index."""
        return self._send(Call("GET", "/stats", parse_dict))

    def close(self) -> None:
        """Closes the connection pool, unless it was passed in as `http`."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        url = self._url(call)
        try:
            response = self._http.request(call.method, url, **self._options(call))
        except httpx2.HTTPError as exc:
            raise transport_error(exc, url, self.timeout) from exc
        return call.parse(decode(response))


class AsyncRetrievalClient(BaseClient):
    """`RetrievalClient` for asyncio code: the same methods, awaited.

    Args: as RetrievalClient, with `http` an httpx2.AsyncClient. Close with
    `await client.aclose()` or `async with AsyncRetrievalClient(...) as client`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        http: httpx2.AsyncClient | None = None,
    ) -> None:
        if http is None and timeout is None:
            timeout = DEFAULT_TIMEOUT_S
        super().__init__(base_url, api_key, timeout)
        self._owns_http = http is None
        self._http = http if http is not None else httpx2.AsyncClient(timeout=timeout)

    async def search(
        self,
        query: str,
        k: int = DEFAULTS.k,
        *,
        mode: Mode = DEFAULTS.mode,
        filters: Filters | None = DEFAULTS.filters,
        max_per_article: int | None = DEFAULTS.max_per_article,
        offset: int = DEFAULTS.offset,
        highlight: bool = DEFAULTS.highlight,
        min_score: float | None = DEFAULTS.min_score,
        recency_half_life_days: float | None = DEFAULTS.recency_half_life_days,
        now: str | None = DEFAULTS.now,
        sort: Sort = DEFAULTS.sort,
        collapse: bool = DEFAULTS.collapse,
    ) -> list[Hit]:
        """See `RetrievalClient.search`."""
        options = SearchOptions(k, mode, filters, max_per_article, offset, highlight, min_score,
                                recency_half_life_days, now, sort, collapse)
        call = search_call(query, options)
        return await self._send(call)

    async def search_batch(
        self,
        queries: Sequence[str],
        k: int = DEFAULTS.k,
        *,
        mode: Mode = DEFAULTS.mode,
        filters: Filters | None = DEFAULTS.filters,
        max_per_article: int | None = DEFAULTS.max_per_article,
        offset: int = DEFAULTS.offset,
        highlight: bool = DEFAULTS.highlight,
        min_score: float | None = DEFAULTS.min_score,
        recency_half_life_days: float | None = DEFAULTS.recency_half_life_days,
        now: str | None = DEFAULTS.now,
        sort: Sort = DEFAULTS.sort,
        collapse: bool = DEFAULTS.collapse,
    ) -> list[list[Hit]]:
        """See `RetrievalClient.search_batch`."""
        options = SearchOptions(k, mode, filters, max_per_article, offset, highlight, min_score,
                                recency_half_life_days, now, sort, collapse)
        call = batch_call(queries, options)
        return await self._send(call)

    async def passage(self, passage_id: int) -> Passage:
        return await self._send(Call("GET", item_path("passages", passage_id), parse_passage))

    async def article(self, article_id: str) -> Article:
        return await self._send(Call("GET", item_path("articles", article_id), parse_article))

    async def related(self, article_id: str, k: int = 10) -> list[RelatedArticle]:
        """See `RetrievalClient.related`."""
        return await self._send(related_call(article_id, k))

    async def add_articles(self, articles: Sequence[Article]) -> dict[str, Any]:
        body = {"articles": [article_json(a) for a in articles]}
        return await self._send(Call("POST", "/articles", parse_dict, body))

    async def delete_article(self, article_id: str) -> int:
        answer = await self._send(Call("DELETE", item_path("articles", article_id), parse_dict))
        return int(require(answer, ("passages_removed",), "delete answer")["passages_removed"])

    async def health(self) -> dict[str, Any]:
        return await self._send(Call("GET", "/healthz", parse_dict))

    async def ready(self) -> dict[str, Any]:
        return await self._send(Call("GET", "/readyz", parse_dict))

    async def stats(self) -> dict[str, Any]:
        return await self._send(Call("GET", "/stats", parse_dict))

    async def aclose(self) -> None:
        """Closes the connection pool, unless it was passed in as `http`."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncRetrievalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        url = self._url(call)
        try:
            response = await self._http.request(call.method, url, **self._options(call))
        except httpx2.HTTPError as exc:
            raise transport_error(exc, url, self.timeout) from exc
        return call.parse(decode(response))
