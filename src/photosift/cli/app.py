"""The Typer application the command modules register on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="photosift",
    help="Classify a photo library offline: labels and album categories in a local catalog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List the available models, or build one from pip-shipped weights.")
app.add_typer(models_app, name="models")
