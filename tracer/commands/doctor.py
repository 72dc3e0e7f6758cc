"""`droptrace doctor`: the known-bad settings, checked before any packet is lost."""

from __future__ import annotations

import sys

import click

from tracer import oneline, startup
from tracer.commands.common import tell


@click.command()
@click.option(
    "--netns",
    "netns_spec",
    default="host",
    metavar="NAME|PATH",
    show_default=True,
    help="The namespace to check.",
)
def doctor(netns_spec: str) -> None:
    """Check the field reports' known-bad settings: exit 0 clean, 1 findings, 2 unchecked."""
    from tracer import doctor as doc
    from tracer.errors import DroptraceError
    from tracer.model.findings import Finding, Level

    try:
        startup.require_root()
        ref = startup.netns_ref(netns_spec)
        findings = doc.check(doc.gather(ref))
    except (DroptraceError, OSError) as err:
        oneline.fail("droptrace", f"could not check: {err}", 2)
    try:
        findings += doc.hooks_check(ref, startup.start(signals=False, note=tell).reasons)
    except (DroptraceError, OSError) as err:
        findings.append(Finding(Level.FAIL, f"no drop hook can be attached: {err}"))
    colors = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "red"}
    for f in findings:
        line = f"{click.style(f'{f.level:<4}', fg=colors[f.level])}  {f.what}"
        click.echo(line + (f"\n      fix: {f.fix}" if f.fix else ""))
    sys.exit(1 if any(f.level is not Level.OK for f in findings) else 0)
