"""Errors raised by the retrieval library.

Every error derives from RetrievalError, so callers can catch one type:

    RetrievalError
    ├── InputError (ValueError)            bad article, file, line or argument; says what to fix
    │   └── LoadError                      a source file, line or feed entry could not be read
    ├── CollectionError                    the collection on disk cannot be used as asked
    │   ├── ModelMismatchError (ValueError) opened with another model than it was built with
    │   ├── CollectionFormatError          manifest missing, unreadable or of an unknown version
    │   ├── CollectionLockedError          another process is writing to it
    │   └── ShardUnavailableError          a shard of a sharded collection cannot answer now
    ├── NotFoundError (KeyError)           no article or passage with that id
    ├── EmptyIndexError                    a search on a collection with no passages
    └── MissingDependencyError (ImportError) an optional library is missing; names the extra
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every error this library raises."""


class InputError(RetrievalError, ValueError):
    """An argument or an input record is invalid; the message says what to fix."""


class LoadError(InputError):
    """A source file, one of its lines or one of its feed entries could not be loaded.

    Attributes:
        path: the file that failed.
        line: 1-based line number for line-oriented formats (JSONL), else None.
        reason: what was wrong, without the location.
        entry: 1-based entry number within a feed (RSS, Atom), else None.
        entry_id: that entry's id (guid or link) when it has one, else None.
    """

    def __init__(
        self,
        path: str,
        reason: str,
        line: int | None = None,
        *,
        entry: int | None = None,
        entry_id: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        self.entry = entry
        self.entry_id = entry_id
        super().__init__(f"{self.locate(path, line, entry=entry, entry_id=entry_id)}: {reason}")

    @staticmethod
    def locate(
        path: str, line: int | None = None, *, entry: int | None = None, entry_id: str | None = None
    ) -> str:
        """`path`, `path:line`, or `path: entry N (id '...')`, as error messages start."""
        if line is not None:
            return f"{path}:{line}"
        if entry is not None:
            shown = f" (id {entry_id!r})" if entry_id else ""
            return f"{path}: entry {entry}{shown}"
        return path


class CollectionError(RetrievalError):
    """The collection on disk cannot be used as asked."""


class ModelMismatchError(CollectionError, ValueError):
    """The collection was built with another embedding model or settings."""


class CollectionFormatError(CollectionError):
    """The collection's manifest is missing, unreadable or of an unknown format version."""


class CollectionLockedError(CollectionError):
    """Another writer kept the collection's database past the write's lock timeout."""


class ShardUnavailableError(CollectionError):
    """A shard of a sharded collection has no live replica, or did not answer in time.

    The service answers 503 with Retry-After: Ray Serve restarts a dead replica.
    """


class NotFoundError(RetrievalError, KeyError):
    """No article or passage has the requested id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class EmptyIndexError(RetrievalError):
    """A search was asked of a collection that holds no passages."""


class MissingDependencyError(RetrievalError, ImportError):
    """An optional library that a feature needs cannot be imported.

    The message names the feature, the libraries, why the import failed and the extra
    of this package that installs them, e.g. "reading HTML pages needs trafilatura,
    which cannot be imported (No module named 'trafilatura'): pip install
    'retrieval[engine]'".
    """

    def __init__(self, feature: str, libraries: str, extra: str, cause: ImportError) -> None:
        self.feature = feature
        self.extra = extra
        # The first line only: lxml's message goes on with advice of its own.
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        super().__init__(
            f"{feature} needs {libraries}, which cannot be imported ({reason}): "
            f"pip install 'retrieval[{extra}]'"
        )
