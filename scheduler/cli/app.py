"""The `corral` CLI entry point."""

from __future__ import annotations

import json

import typer

from scheduler import __version__
from scheduler.cli.errors import EXIT_CODES_HELP
from scheduler.cli.sim_cmd import sim
from scheduler.model.job import JobSpec

app = typer.Typer(
    name="corral",
    help=f"Corral: a scheduler for GPU training clusters. {EXIT_CODES_HELP}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("sim")(sim)


@app.command()
def version() -> None:
    """Print Corral's version."""
    print(__version__)


@app.command()
def schema() -> None:
    """Print the JSON Schema of a job spec (for editors and CI validation)."""
    print(json.dumps(JobSpec.model_json_schema(), indent=2))


def main() -> None:
    app()
