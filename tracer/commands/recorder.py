"""The flight recorder's commands: `record`, `dump`, `status`, `stop`."""

from __future__ import annotations

import click

from tracer import recorder, startup
from tracer.commands.common import (
    ip_option,
    namespace_option,
    netns_option,
    one_line_errors,
    pod_option,
    tell,
)
from tracer.hooks import DEFAULT_CAUSE_RATE


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
@one_line_errors
def record(
    pod: str | None,
    namespace: str | None,
    netns_specs: tuple[str, ...],
    cidrs: tuple[str, ...],
    size: int,
    cause_rate: int,
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
    )
    for note in started:
        tell(note)
    pinned = f"recorder pinned at {recorder.PIN_DIR}"
    tell(f"{pinned}; `droptrace dump` reads it, `droptrace stop` removes it")


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write here (mode 0600).")
@click.option("--redact", is_flag=True, help="Replace addresses and pod names with placeholders.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of Markdown.")
@one_line_errors
def dump(out: str | None, redact: bool, as_json: bool) -> None:
    """Write a bug report from the flight recorder, without stopping it."""
    from tracer import bugreport
    from tracer.sinks import report

    target = bugreport.check_out(out) if out else None  # before the work, not after it
    doc = bugreport.build(startup.start(signals=False, note=tell).pipeline())
    if redact:
        doc = report.redact(doc)
    text = report.to_json_text(doc) if as_json else report.to_markdown(doc)
    if target is not None:
        bugreport.write_private(target, text)
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
