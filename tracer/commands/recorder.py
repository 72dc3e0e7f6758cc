"""The flight recorder's commands: `record`, `dump`, `status`, `stop`."""

from __future__ import annotations

import click

from tracer import recorder, startup
from tracer.commands.common import (
    ip_option,
    namespace_option,
    netns_option,
    one_line_errors,
    pcap_writer,
    pod_option,
    tell,
)
from tracer.hooks import CAPTURE_BYTES, DEFAULT_CAUSE_RATE
from tracer.outfiles import check_out, write_private


@click.command()
@pod_option
@namespace_option
@netns_option
@ip_option
@click.option(
    "--size",
    type=click.IntRange(min=16, max=1 << 20),
    default=recorder.DEFAULT_SLOTS,
    show_default=True,
    help="Drops kept (the oldest are overwritten).",
)
@click.option(
    "--cause-rate",
    type=click.IntRange(min=0),
    default=DEFAULT_CAUSE_RATE,
    show_default=True,
    help="Drops of one cause kept per second per CPU; the rest are only counted (0: all).",
)
@click.option(
    "--capture-bytes",
    type=click.IntRange(min=0, max=CAPTURE_BYTES),
    default=recorder.DEFAULT_CAPTURE,
    show_default=True,
    metavar="N",
    help="Packet bytes kept with each drop (from the IP header), for `dump --pcap`; "
    "0: none, and no packet read per drop.",
)
@one_line_errors
def record(
    pod: str | None,
    namespace: str | None,
    netns_specs: tuple[str, ...],
    cidrs: tuple[str, ...],
    size: int,
    cause_rate: int,
    capture_bytes: int,
) -> None:
    """Start a flight recorder in the kernel that keeps recording after this command exits.

    With --pod, the pod's addresses as they are now are recorded (a pod that restarts with
    a new address needs a new recorder)."""
    scope = startup.Scope(pod, namespace, netns=netns_specs, cidrs=cidrs)
    ready = startup.start(scope, signals=False, note=tell)
    ready.tell(tell)
    started = recorder.start(
        ready.filters,
        size,
        kernel_reasons=ready.reasons.available,
        counted=ready.counted,
        cause_rate=cause_rate,
        capture_len=capture_bytes,
    )
    for note in started:
        tell(note)
    pinned = f"recorder pinned at {recorder.PIN_DIR}"
    tell(f"{pinned}; `droptrace dump` reads it, `droptrace stop` removes it")


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write here (mode 0600).")
@click.option("--redact", is_flag=True, help="Replace addresses and pod names with placeholders.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of Markdown.")
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write the recorded packets here as pcapng (mode 0600), each with why it was "
    "dropped as its comment; the report is then written only with --out.",
)
@one_line_errors
def dump(out: str | None, redact: bool, as_json: bool, pcap: str | None) -> None:
    """Write a bug report from the flight recorder, without stopping it."""
    import socket

    from tracer import bugreport
    from tracer.sinks import report
    from tracer.sinks.jsonl import to_json

    # Both checked before the work, not after it.
    target = check_out(out) if out else None
    pcap_path = check_out(pcap, "--pcap") if pcap else None
    pipeline = startup.start(signals=False, note=tell).pipeline()
    rec = recorder.read()
    items = bugreport.explained(pipeline, rec)
    # With --pcap the report is written only where asked for: --out, or --json on stdout.
    wanted = target is not None or as_json or pcap_path is None
    doc = bugreport.build(pipeline, rec, items) if wanted else None
    redactor = None
    if redact:  # one redactor for both: the report's ip-N is the packet's placeholder N
        known: object = doc if doc is not None else [to_json(item) for item in items]
        redactor = report.redactor(known, (socket.gethostname(),))
    if pcap_path is not None:
        writer = pcap_writer(pcap_path, rec.capture_len or CAPTURE_BYTES, redactor)
        try:
            for item in items:
                writer.add(item)
        finally:
            writer.close()
        tell(writer.outcome())
    if doc is None:
        return
    if redactor is not None:
        doc = redactor.doc(doc)
    text = report.to_json_text(doc) if as_json else report.to_markdown(doc)
    if target is not None:
        write_private(target, text)
        tell(f"wrote {target} ({len(doc['drops'])} drops)")
    else:
        click.echo(text, nl=False)


@click.command()
@one_line_errors
def status() -> None:
    """Whether a flight recorder runs, since when, and what it counted."""
    startup.require_root()
    click.echo(recorder.status_line())


@click.command()
@one_line_errors
def stop() -> None:
    """Detach and unpin the flight recorder; nothing of droptrace stays in the kernel."""
    startup.require_root()
    click.echo("flight recorder stopped" if recorder.stop() else "no flight recorder was running")
