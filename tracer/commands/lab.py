"""`droptrace lab`: the seeds' failures, rebuilt in network namespaces and diagnosed live."""

from __future__ import annotations

import click

from tracer import startup
from tracer.commands.common import one_line_errors, sink, tell
from tracer.lab import LAB_PREFIX


def _progress(line: str) -> None:
    click.echo(f"droptrace lab: {line}", err=True)


@click.group()
def lab() -> None:
    """The seeds' failures, rebuilt in network namespaces and diagnosed live."""


@lab.command("list")
def lab_list() -> None:
    """The scenarios, with the field report each comes from."""
    from tracer.lab.scenarios import SCENARIOS

    width = max(len(s.name) for s in SCENARIOS)
    for s in SCENARIOS:
        click.echo(f"{s.name:<{width}}  {s.title}  [{s.seed or 'no seed'}]")


def _complete_scenario(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    from click.shell_completion import CompletionItem

    from tracer.lab.scenarios import SCENARIOS

    return [CompletionItem(s.name) for s in SCENARIOS if s.name.startswith(incomplete)]


_prefix_option = click.option(
    "--prefix", default=LAB_PREFIX, show_default=True, hidden=True, help="Namespace name prefix."
)


@lab.command("run")
@click.argument("name", metavar="SCENARIO", shell_complete=_complete_scenario)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of the live view.")
@_prefix_option
@one_line_errors
def lab_run(name: str, as_json: bool, prefix: str) -> None:
    """Build SCENARIO, trace it while its failing traffic runs, then tear it down."""
    from tracer.lab import runner

    s = runner.scenario(name)
    runner.check_prefix(prefix)
    ready = startup.start(pods=True, note=tell)
    pipeline = ready.pipeline()
    ready.tell(tell)
    runner.watch(s, prefix, pipeline, sink(as_json), progress=_progress)


@lab.command("up")
@click.argument("name", metavar="SCENARIO", shell_complete=_complete_scenario)
@_prefix_option
@one_line_errors
def lab_up(name: str, prefix: str) -> None:
    """Build SCENARIO with its fault and leave it for you to explore."""
    from tracer.lab import runner

    s = runner.scenario(name)
    runner.check_prefix(prefix)
    startup.require_root()
    for line in runner.up_explained(s, prefix, progress=_progress):
        _progress(line)


@lab.command("down")
@_prefix_option
@one_line_errors
def lab_down(prefix: str) -> None:
    """Remove every lab namespace (and so its links and rules), also of a killed run."""
    from tracer.lab import runner

    runner.check_prefix(prefix)
    startup.require_root()
    removed = runner.down(prefix)
    _progress(
        f"removed {len(removed)} lab namespaces" + (f": {' '.join(removed)}" if removed else "")
    )
