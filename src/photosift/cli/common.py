"""What every command shares: the console, the one error-to-exit-code rule, settings from options, option types.

Exit codes: 0 when the run finished (unreadable files are reported, not fatal), 1 for a fatal error (model
missing or corrupt, catalog unwritable, …), 2 for usage errors. Messages are printed as plain text: a path with
brackets in it is a path, not Rich markup.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from photosift.core.config import Settings
from photosift.core.errors import PhotosiftError, UnknownCategory
from photosift.core.scanner import printable

if TYPE_CHECKING:
    from rich.console import Console

DbOpt = Annotated[
    Path | None, typer.Option("--db", help="Catalog file (default: PHOTOSIFT_DB or the user data dir).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
RulesOpt = Annotated[
    Path | None, typer.Option("--rules", help="Category rules file (default: config dir, else built in).")
]


class Engine(str, Enum):
    local = "local"
    ray = "ray"


EngineOpt = Annotated[
    Engine | None,
    typer.Option("--engine", help="local (this machine's threads) or ray (Ray Data; the cluster extra)."),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="A running Ray cluster (ray://HEAD:10001, HEAD:6379, auto); implies --engine ray. "
        "Default: a local Ray instance for each run.",
    ),
]


def engine_settings(engine: Engine | None, ray_address: str | None) -> dict[str, Any]:
    """Settings overrides for --engine and --ray-address (an address means the ray engine)."""
    if engine is None and ray_address is not None:
        engine = Engine.ray
    return {"engine": engine.value if engine is not None else None, "ray_address": ray_address}


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """``error: MESSAGE`` on stderr, as one line of text (a path's brackets, newlines or undecodable bytes
    included), and exit with ``code``."""
    from rich.text import Text

    console(stderr=True).print(Text.assemble(("error:", "bold red"), " ", printable(message)))
    raise typer.Exit(code)


def text(value: object) -> Any:
    """A table cell or line that Rich prints as it is: never markup, always valid text."""
    from rich.text import Text

    return Text(printable(str(value)))


@contextmanager
def errors_to_exit(usage: tuple[type[PhotosiftError], ...] = (), hint: str = "") -> Iterator[None]:
    """A PhotosiftError becomes its one-line message and exit 1; ``usage`` errors (and unknown categories)
    exit 2, with ``hint`` appended."""
    import sqlite3

    usage_errors: tuple[type[PhotosiftError], ...] = (UnknownCategory, *usage)
    try:
        yield
    except usage_errors as exc:
        fail(f"{exc}{hint}", code=2)
    except PhotosiftError as exc:
        fail(str(exc))
    except (
        sqlite3.DatabaseError
    ) as exc:  # the catalog failed under a query (Catalog turns most into CatalogError)
        fail(f"catalog error ({exc}); `photosift doctor` checks the catalog")


def settings(db: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (PHOTOSIFT_*), then the options the user gave (None: not given)."""
    from pydantic import ValidationError

    try:
        result = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "PHOTOSIFT_" + ".".join(str(p) for p in first["loc"]).upper()
        fail(f"{name}: {first['msg']}", code=2)
    if db is not None:
        result.db = db
    for key, value in overrides.items():
        if value is not None:
            setattr(result, key, value)
    return result


def sample_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("photosift") / "samples"))
