"""What every command shares: the one-line error mapping, status lines, sinks, scope options."""

from __future__ import annotations

import click

from tracer import oneline
from tracer.sinks import Sink

# Droptrace's own errors, and refusals from the kernel, as one line and an exit code.
one_line_errors = oneline.one_line_errors("droptrace", kernel=True)


def tell(line: str) -> None:
    """A status line for the user, on stderr."""
    click.echo(f"droptrace: {line}", err=True)


def sink(as_json: bool) -> Sink:
    if as_json:
        from tracer.sinks.jsonl import JsonLines

        return JsonLines()
    from tracer.sinks.live import LiveView

    return LiveView()


# Scope options of every command that keeps hooks in the kernel.
netns_option = click.option(
    "--netns",
    "netns_specs",
    multiple=True,
    metavar="NAME|PATH",
    help="Only drops in this network namespace (`ip netns` name or path); repeatable.",
)
ip_option = click.option(
    "--ip",
    "cidrs",
    multiple=True,
    metavar="CIDR",
    help="Only packets from or to this address or network; repeatable.",
)
