"""Commands and benchmarks that other modules plug into `retrieval` through entry points.

The service registers `serve` and its benchmarks this way, so the library never imports
the service. A registrar whose module cannot be imported (an extra not installed) still
shows up, and says what to install when used.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

EXIT_USAGE = 2


def load_registrars(group: str) -> list[Any]:
    """The group's register(subparsers) functions, sorted by name."""
    registrars = []
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            registrars.append(entry.load())
        except ImportError as error:
            registrars.append(unavailable_command(entry.name, error))
    return registrars


def unavailable_command(name: str, error: ImportError) -> Any:
    """A registrar for a command whose module needs an extra that is not installed."""

    def register(commands: Any) -> None:
        parser = commands.add_parser(name, help=f"(unavailable: {error.name} is not installed)")
        parser.set_defaults(run=lambda args: explain_missing(name, error))

    return register


def explain_missing(name: str, error: ImportError) -> int:
    print(f"error: 'retrieval {name}' needs {error.name}: install it with "
          f"pip install 'retrieval[service,eval]' ({error})", file=sys.stderr)
    return EXIT_USAGE
