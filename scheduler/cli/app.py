"""The `corral` CLI entry point.

Commands talk to the Corral API found through CORRAL_API_URL / CORRAL_TOKEN or
`$CORRAL_HOME/context.yaml` (see scheduler.cli.context). Data goes to stdout, messages to stderr.
"""

from __future__ import annotations

import json
import sys

import typer

from scheduler import __version__
from scheduler.cli.audit_cmd import audit_app
from scheduler.cli.check_cmd import check
from scheduler.cli.cluster_cmd import cordon, nodes, queues, uncordon
from scheduler.cli.errors import EXIT_CODES_HELP
from scheduler.cli.jobs_cmd import cancel, describe, history, jobs, logs, submit
from scheduler.cli.local_cmd import down, status, up
from scheduler.cli.serve_cmd import serve
from scheduler.cli.token_cmd import token_app
from scheduler.compiled import build_name
from scheduler.model.job import JobSpec

app = typer.Typer(
    name="corral",
    help=f"Corral: a scheduler for GPU training clusters. {EXIT_CODES_HELP}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion
)
app.command("submit")(submit)
app.command("jobs")(jobs)
app.command("describe")(describe)
app.command("cancel")(cancel)
app.command("logs")(logs)
app.command("history")(history)
app.command("queues")(queues)
app.command("nodes")(nodes)
app.command("cordon")(cordon)
app.command("uncordon")(uncordon)
app.command("up")(up)
app.command("down")(down)
app.command("status")(status)
app.command("serve")(serve)
app.command("check")(check)
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")


@app.command(
    "sim",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def sim(ctx: typer.Context) -> None:
    """Replay a trace under each policy and print a comparison with the lower bounds (--help: options)."""
    # Imported on use: the simulator pulls numpy and matplotlib, which would slow every other command.
    from scheduler.cli.sim_cmd import sim as sim_command

    inner = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    inner.command()(sim_command)
    code = inner(list(ctx.args), prog_name=ctx.command_path, standalone_mode=False)
    if isinstance(code, int) and code:
        raise SystemExit(code)


@app.command(
    "whatif",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def whatif(ctx: typer.Context) -> None:
    """Replay the live queue under the current and a changed config, side by side (--help: options)."""
    from scheduler.cli.whatif_cmd import whatif as whatif_command  # the simulator: imported on use

    inner = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    inner.command()(whatif_command)
    code = inner(list(ctx.args), prog_name=ctx.command_path, standalone_mode=False)
    if isinstance(code, int) and code:
        raise SystemExit(code)


@app.command()
def version() -> None:
    """Print Corral's version, and whether its decision code runs compiled (CORRAL_COMPILE=1)."""
    print(f"{__version__}, decision code {build_name()}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of a job spec (for editors and CI validation)."""
    print(json.dumps(JobSpec.model_json_schema(), indent=2))


def main() -> None:
    # Not standalone: click's usage errors would print a multi-line box; we print one line instead.
    if len(sys.argv) <= 1:
        sys.argv.append("--help")
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # click's errors (typer vendors click): bad usage → exit 2
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {' '.join(exc.format_message().split())}{where}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
