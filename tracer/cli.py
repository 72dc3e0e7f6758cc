"""Command line: click declarations and rendering only. Start-up is tracer.startup's; every
DroptraceError becomes one line and an exit code (tracer.oneline)."""

from __future__ import annotations

import contextlib
import json

import click

from tracer import startup
from tracer.commands.agent import serve
from tracer.commands.common import (
    Seconds,
    ip_option,
    namespace_option,
    netns_gone,
    netns_option,
    one_line_errors,
    pcap_option,
    pcap_writer,
    pod_option,
    sink,
    tell,
    with_pcap,
)
from tracer.commands.doctor import doctor
from tracer.commands.lab import lab
from tracer.commands.recorder import dump, record, status, stop
from tracer.errors import UsageError
from tracer.hooks import CAPTURE_BYTES, DEFAULT_CAUSE_RATE, DEFAULT_FLOW_LIMIT, DEFAULT_RING_BYTES
from tracer.outfiles import check_out
from tracer.session import DEFAULT_STREAM_RATE, Limits, Stream


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from tracer.version import describe

    click.echo(describe())
    ctx.exit()


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and the BPF object's build id, then exit.",
)
@pod_option
@namespace_option
@netns_option
@ip_option
@click.option(
    "--iface", metavar="NAME", help="Only drops on this interface (in --netns, else the host)."
)
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    metavar="NAME",
    help="Only this kernel drop reason (e.g. NO_SOCKET); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per drop on stdout.")
@pcap_option
@click.option("--duration", type=Seconds(), metavar="S", help="Stop after S seconds.")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N drops.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show expected noise (e.g. frames for another host); always counted.",
)
@click.option(
    "--ring-size",
    type=click.IntRange(min=4096),
    default=DEFAULT_RING_BYTES,
    show_default=True,
    hidden=True,
    help="Ring buffer bytes (power of two).",
)
@click.option(
    "--flow-limit",
    type=click.IntRange(min=0),
    default=DEFAULT_FLOW_LIMIT,
    show_default=True,
    metavar="N",
    help="Show at most N drops per second of each flow (same place, reason and addresses), "
    "and 200 of each cause however many its flows; the rest are counted (suppressed) and "
    "the next shown drop of the flow says how many. 0: show all.",
)
@click.option(
    "--stream-rate",
    type=click.IntRange(min=20),
    default=DEFAULT_STREAM_RATE,
    show_default=True,
    hidden=True,
    help="Read at most this many events a second; the kernel counts the overflow as lost.",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, writable=True),
    hidden=True,
    help="Also write the final summary here as JSON (per-namespace totals; for make bench).",
)
@click.pass_context
@one_line_errors
def main(
    ctx: click.Context,
    pod: str | None,
    namespace: str | None,
    netns_specs: tuple[str, ...],
    cidrs: tuple[str, ...],
    iface: str | None,
    reasons: tuple[str, ...],
    as_json: bool,
    pcap: str | None,
    duration: float | None,
    count: int | None,
    show_all: bool,
    ring_size: int,
    flow_limit: int,
    stream_rate: int,
    summary_json: str | None,
) -> None:
    """Show, live, which packets the kernel drops: where, why, and what to change."""
    if ctx.invoked_subcommand is not None:
        return
    from tracer.session import run

    if ring_size & (ring_size - 1):
        raise UsageError("--ring-size must be a power of two")
    pcap_path = check_out(pcap, "--pcap") if pcap else None  # before the work, not after it
    scope = startup.Scope(pod, namespace, netns_specs, cidrs, iface, reasons)
    ready = startup.start(scope, pods=True, note=tell)
    pipeline = ready.pipeline()
    with ready.watch(netns_gone) as stop, contextlib.ExitStack() as files:
        out = sink(as_json)
        if pcap_path is not None:
            writer = pcap_writer(pcap_path, CAPTURE_BYTES)
            files.callback(writer.close)  # complete blocks only, whatever ends the session
            out = with_pcap(out, writer)
        summary = run(
            ready.filters,
            pipeline,
            out,
            Limits(duration, count, stop),
            Stream(
                ring_size,
                flow_limit,
                stream_rate,
                show_benign=show_all,
                # --flow-limit 0 asks for every drop: then no cause is sampled either.
                cause_rate=DEFAULT_CAUSE_RATE if flow_limit else 0,
                capture_len=CAPTURE_BYTES if pcap_path is not None else 0,
            ),
            on_ready=lambda: ready.tell(tell),  # once tracing: bad input stays one line
            counters=ready.counter_source(pipeline),
        )
    if summary_json:
        with open(summary_json, "w") as f:
            json.dump(summary.to_json(), f)


for command in (lab, record, dump, status, stop, serve, doctor):
    main.add_command(command)
