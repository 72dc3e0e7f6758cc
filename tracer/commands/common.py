"""What every command shares: the one-line error mapping, status lines, sinks, scope options."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tracer import oneline
from tracer.sinks import Sink

if TYPE_CHECKING:  # the pcapng writer loads only with --pcap
    from tracer.sinks.pcapng import PcapngWriter
    from tracer.sinks.report import Redactor

# Droptrace's own errors, and refusals from the kernel, as one line and an exit code.
one_line_errors = oneline.one_line_errors("droptrace", kernel=True)


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A duration in seconds: finite, not negative, at most a year (nan, inf and 1e308 would
    otherwise reach the tracer, after it attached)."""

    name = "seconds"
    LONGEST = 365 * 24 * 3600.0

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or not 0 <= seconds <= self.LONGEST:
            self.fail(f"{value!r} is not between 0 and {self.LONGEST:.0f} seconds", param, ctx)
        return seconds


def tell(line: str) -> None:
    """A status line for the user, on stderr."""
    click.echo(f"droptrace: {line}", err=True)


def netns_gone(name: str) -> None:
    tell(f"network namespace {name} is gone; stopping")


def sink(as_json: bool) -> Sink:
    if as_json:
        from tracer.sinks.jsonl import JsonLines

        return JsonLines()
    from tracer.sinks.live import LiveView

    return LiveView()


def pcap_writer(path: Path, snaplen: int, redactor: Redactor | None = None) -> PcapngWriter:
    """The --pcap file, opened (and its first blocks written) before anything is attached."""
    from tracer.outfiles import open_private
    from tracer.sinks.pcapng import PcapngWriter

    return PcapngWriter(open_private(path, "--pcap"), snaplen, redactor, str(path))


def with_pcap(inner: Sink, writer: PcapngWriter) -> Sink:
    from tracer.sinks.pcapng import PcapngSink

    return PcapngSink(inner, writer, tell)


def complete_netns(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Tab completion of --netns: the `ip netns` names, `host`, or a path as the shell has it."""
    from click.shell_completion import CompletionItem

    from tracer.system.netns import NETNS_DIRS

    if "/" in incomplete:
        return [CompletionItem(incomplete, type="file")]
    names = {"host"}
    for d in NETNS_DIRS:
        with contextlib.suppress(OSError):
            names.update(p.name for p in d.iterdir())
    return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]


# Scope options of every command that keeps hooks in the kernel.
pod_option = click.option(
    "--pod",
    metavar="NAME",
    help="Only drops of this pod's traffic (its addresses, filtered in the kernel).",
)
namespace_option = click.option(
    "-n", "--namespace", metavar="NAMESPACE", help="The --pod's Kubernetes namespace."
)
netns_option = click.option(
    "--netns",
    "netns_specs",
    multiple=True,
    metavar="NAME|PATH",
    shell_complete=complete_netns,
    help="Only drops in this network namespace (`ip netns` name or path); repeatable.",
)
ip_option = click.option(
    "--ip",
    "cidrs",
    multiple=True,
    metavar="CIDR",
    help="Only packets from or to this address or network; repeatable.",
)
pcap_option = click.option(
    "--pcap",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write the dropped packets here as pcapng (their first 128 bytes from the IP "
    "header; each packet's comment says why it was dropped). Mode 0600.",
)
