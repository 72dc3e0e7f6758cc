"""Command line: parse, call, print. Every DroptraceError becomes one line and an exit code."""

from __future__ import annotations

import difflib
import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from ipaddress import ip_network
from typing import Any, ParamSpec, TypeVar

import click

from tracer import libbpf, system
from tracer.enrich import Enricher, ifaces, netns
from tracer.enrich.kernel import DropReasons
from tracer.errors import BadCidr, DroptraceError, HookUnavailable, UnknownReason
from tracer.hooks import DEFAULT_RING_BYTES, Filters, Network
from tracer.session import Limits, run

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, code: int) -> None:
    click.echo(f"droptrace: {message}", err=True)
    sys.exit(code)


def one_line_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Map droptrace's own errors, and refusals from the kernel, to one line and an exit code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DroptraceError as err:
            _fail(str(err), err.exit_code)
        except PermissionError as err:
            _fail(f"the kernel refused: {err} (missing CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN?)", 77)
        except OSError as err:
            _fail(str(err), 1)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as err:
            if os.environ.get("DROPTRACE_DEBUG"):
                raise
            _fail(
                f"internal error: {type(err).__name__}: {err} (DROPTRACE_DEBUG=1 shows where)", 70
            )
        raise AssertionError("unreachable")

    return wrapper


def _networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    out = []
    for v in values:
        try:
            out.append(ip_network(v, strict=False))
        except ValueError:
            raise BadCidr(f"--ip {v!r} is not an IP address or CIDR (e.g. 198.18.1.0/24)") from None
    return tuple(out)


def _reasons(names: tuple[str, ...], known: DropReasons) -> tuple[int, ...]:
    out = []
    for name in names:
        value = known.value(name)
        if value is None:
            close = difflib.get_close_matches(name.upper(), known.names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            if not known.available:
                hint = "; this kernel's kfree_skb carries no drop reasons"
            raise UnknownReason(f"unknown drop reason {name!r} for this kernel{hint}")
        out.append(value)
    return tuple(out)


def _sigterm_as_interrupt() -> None:
    def handler(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--netns",
    "netns_specs",
    multiple=True,
    metavar="NAME|PATH",
    help="Only drops in this network namespace (`ip netns` name or path); repeatable.",
)
@click.option(
    "--ip",
    "cidrs",
    multiple=True,
    metavar="CIDR",
    help="Only packets from or to this address or network; repeatable.",
)
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
@click.option("--duration", type=click.FloatRange(min=0), metavar="S", help="Stop after S seconds.")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N drops.")
@click.option(
    "--ring-size",
    type=click.IntRange(min=4096),
    default=DEFAULT_RING_BYTES,
    show_default=True,
    hidden=True,
    help="Ring buffer bytes (power of two).",
)
@click.pass_context
@one_line_errors
def main(
    ctx: click.Context,
    netns_specs: tuple[str, ...],
    cidrs: tuple[str, ...],
    iface: str | None,
    reasons: tuple[str, ...],
    as_json: bool,
    duration: float | None,
    count: int | None,
    ring_size: int,
) -> None:
    """Show, live, which packets the kernel drops: where, why, and what to change."""
    if ctx.invoked_subcommand is not None:
        return
    networks = _networks(cidrs)
    system.require_root()
    system.require_btf()
    libbpf.lib()
    mounted = system.ensure_mounts()
    known = DropReasons()
    reason_values = _reasons(reasons, known)
    refs = [netns.resolve(s) for s in netns_specs]
    ifindex = 0
    if iface:
        where = refs[0] if refs else netns.resolve("host")
        ifindex = ifaces.index_of(iface, where)
        if not refs:
            refs = [where]  # ifindex numbers repeat across namespaces
    filters = Filters(
        netns=tuple(r.inode for r in refs),
        networks=networks,
        reasons=reason_values,
        ifindex=ifindex,
    )
    if ring_size & (ring_size - 1):
        raise BadCidr("--ring-size must be a power of two")
    for line in mounted:
        click.echo(f"droptrace: {line}", err=True)
    if not known.available:
        click.echo("droptrace: this kernel's kfree_skb has no drop reasons", err=True)

    sink: Any
    if as_json:
        from tracer.sinks.jsonl import JsonLines

        sink = JsonLines()
    else:
        from tracer.sinks.live import LiveView

        sink = LiveView()
    _sigterm_as_interrupt()
    run(filters, Enricher(known), sink, Limits(duration, count), ring_size)


# Keep HookUnavailable importable from here for callers that map exit codes.
__all__ = ["HookUnavailable", "main"]
