"""Command line: parse, call, print. Every DroptraceError becomes one line and an exit code."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from ipaddress import ip_network
from typing import Any, NoReturn

import click

from tracer import libbpf, oneline, system
from tracer.enrich import Enricher, ifaces, netns
from tracer.enrich.kernel import DropReasons
from tracer.enrich.pods import PodIdentity
from tracer.errors import BadCidr, DroptraceError, UnknownPod, UnknownReason, UsageError
from tracer.hooks import DEFAULT_FLOW_LIMIT, DEFAULT_RING_BYTES, Filters, Network
from tracer.session import DEFAULT_STREAM_RATE, Limits, Sink, run


def _fail(message: str, code: int) -> NoReturn:
    oneline.fail("droptrace", message, code)


# Droptrace's own errors, and refusals from the kernel, as one line and an exit code.
one_line_errors = oneline.one_line_errors("droptrace", kernel=True)


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
    # A background job of a non-interactive shell starts with SIGINT ignored, and Python
    # then leaves it so: `kill -INT` must still end droptrace cleanly, like Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--pod",
    metavar="NAME",
    help="Only drops of this pod's traffic (its addresses, filtered in the kernel).",
)
@click.option("-n", "--namespace", metavar="NAMESPACE", help="The --pod's Kubernetes namespace.")
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
    help="Show at most N drops per second of each flow (same place, reason and addresses); "
    "the rest are counted and the next shown drop says how many. 0: show all.",
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
    networks = _networks(cidrs)
    if namespace and not pod:
        raise UsageError("-n/--namespace picks the namespace of a --pod; give --pod NAME too")
    known = _checks()
    pods = PodIdentity.connect()
    if pod:  # an unknown pod is one line, which says why the API was not asked
        netns_specs, networks = _pod_scope(pods, pod, namespace, netns_specs, networks)
    refs = _resolve(netns_specs)
    filters = _filters(known, refs, networks, iface, reasons)
    if ring_size & (ring_size - 1):
        raise UsageError("--ring-size must be a power of two")
    _mount_filesystems()
    _sigterm_as_interrupt()
    stop = threading.Event()
    with _watching(refs, stop):
        summary = run(
            filters,
            Enricher(known, pods),
            _sink(as_json),
            Limits(duration, count, stop),
            ring_size,
            show_benign=show_all,
            on_ready=lambda: _tell(pods.notes),  # once tracing: bad input stays one line
            flow_limit=flow_limit,
            stream_rate=stream_rate,
        )
    if summary_json:
        with open(summary_json, "w") as f:
            json.dump(summary.to_json(), f)


@contextlib.contextmanager
def _watching(refs: list[netns.NetnsRef], stop: threading.Event) -> Iterator[None]:
    """While tracing, each watched namespace is held open, so the kernel cannot give its
    inode number to a new namespace whose drops the filter would then show as this one's.
    A named one (`ip netns`) that is deleted ends the trace, said in one line. A
    /proc/PID/ns/net path is not watched: its process may end while the namespace lives on."""
    held = []
    for ref in refs:
        with contextlib.suppress(OSError):
            held.append(os.open(ref.path, os.O_RDONLY))
    named = [r for r in refs if r.path.parent in netns.NETNS_DIRS]
    done, lock = threading.Event(), threading.Lock()

    def gone(ref: netns.NetnsRef) -> bool:
        try:
            return netns.inode_of(ref.path) != ref.inode
        except OSError:
            return True

    def watch() -> None:
        while not done.wait(1.0):
            for ref in named:
                if gone(ref):
                    with lock:  # never after the trace ended (and its summary)
                        if not done.is_set():
                            click.echo(
                                f"droptrace: network namespace {ref.name} is gone; stopping",
                                err=True,
                            )
                            stop.set()
                    return

    watcher = threading.Thread(target=watch, name="netns-watch", daemon=True)
    if named:
        watcher.start()
    try:
        yield
    finally:
        with lock:
            done.set()
        if named:
            watcher.join()
        for fd in held:
            os.close(fd)


def _resolve(netns_specs: tuple[str, ...]) -> list[netns.NetnsRef]:
    return [netns.resolve(s) for s in netns_specs]


def _tell(notes: list[str]) -> None:
    for note in notes:
        click.echo(f"droptrace: {note}", err=True)


def _pod_scope(
    pods: PodIdentity,
    name: str,
    namespace: str | None,
    netns_specs: tuple[str, ...],
    networks: tuple[Network, ...],
) -> tuple[tuple[str, ...], tuple[Network, ...]]:
    """--pod as kernel filters: its addresses (so drops of its traffic on the node count
    too); a pod without addresses is watched in its own network namespace instead."""
    found = pods.resolve(name, namespace)
    if found.ips:
        networks = networks + tuple(ip_network(ip) for ip in found.ips)
    elif found.netns_path is not None:
        netns_specs = (*netns_specs, str(found.netns_path))
    else:
        raise UnknownPod(f"pod {found.ref} has no IP and does not run on this node")
    where = f" via {found.host_iface}" if found.host_iface else ""
    ips = ", ".join(str(ip) for ip in found.ips) or "no IP"
    pods.notes.insert(0, f"pod {found.ref} ({ips}{where})")  # told once tracing
    return netns_specs, networks


def _filters(
    known: DropReasons,
    refs: list[netns.NetnsRef],
    networks: tuple[Network, ...],
    iface: str | None = None,
    reasons: tuple[str, ...] = (),
) -> Filters:
    ifindex = 0
    if iface:
        where = refs[0] if refs else netns.resolve("host")
        ifindex = ifaces.index_of(iface, where)
        if not refs:
            refs = [where]  # ifindex numbers repeat across namespaces
    return Filters(
        netns=tuple(r.inode for r in refs),
        networks=networks,
        reasons=_reasons(reasons, known),
        ifindex=ifindex,
    )


def _prepare() -> DropReasons:
    """Checks and mounts every tracing command needs; returns the kernel's drop reasons."""
    known = _checks()
    _mount_filesystems()
    return known


def _mount_filesystems() -> None:
    """tracefs and bpffs, where missing: quietly, as perf and bpftool do; a failure is an error."""
    system.ensure_mounts()


def _checks() -> DropReasons:
    """What every tracing command needs; returns the running kernel's drop reasons."""
    system.require_root()
    system.require_btf()
    libbpf.lib()
    known = DropReasons()
    if not known.available:
        click.echo("droptrace: this kernel's kfree_skb has no drop reasons", err=True)
    return known


def _sink(as_json: bool) -> Sink:
    if as_json:
        from tracer.sinks.jsonl import JsonLines

        return JsonLines()
    from tracer.sinks.live import LiveView

    return LiveView()


def _progress(line: str) -> None:
    click.echo(f"droptrace lab: {line}", err=True)


@main.group()
def lab() -> None:
    """The seeds' failures, rebuilt in network namespaces and diagnosed live."""


@lab.command("list")
def lab_list() -> None:
    """The scenarios, with the field report each comes from."""
    from tracer.lab.scenarios import SCENARIOS

    width = max(len(s.name) for s in SCENARIOS)
    for s in SCENARIOS:
        click.echo(f"{s.name:<{width}}  {s.title}  [{s.seed or 'no seed'}]")


_prefix_option = click.option(
    "--prefix", default="dtlab-", show_default=True, hidden=True, help="Namespace name prefix."
)


@lab.command("run")
@click.argument("name", metavar="SCENARIO")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of the live view.")
@_prefix_option
@one_line_errors
def lab_run(name: str, as_json: bool, prefix: str) -> None:
    """Build SCENARIO, trace it while its failing traffic runs, then tear it down."""
    from tracer.lab import runner

    s = runner.scenario(name)
    runner.check_prefix(prefix)
    known = _prepare()
    _sigterm_as_interrupt()
    pods = PodIdentity.connect()
    _tell(pods.notes)
    runner.watch(s, prefix, Enricher(known, pods), _sink(as_json), progress=_progress)


@lab.command("up")
@click.argument("name", metavar="SCENARIO")
@_prefix_option
@one_line_errors
def lab_up(name: str, prefix: str) -> None:
    """Build SCENARIO with its fault and leave it for you to explore."""
    from tracer.lab import labpods, runner
    from tracer.lab.scenarios import scenario_dir

    s = runner.scenario(name)
    runner.check_prefix(prefix)
    system.require_root()
    try:
        names = runner.up(s, prefix, progress=_progress)
    except BaseException:
        runner.down(prefix)
        raise
    _progress(
        f"up: {' '.join(names)}; traffic: bash {scenario_dir(s.name)}/traffic.sh "
        f"(LAB_PREFIX={prefix}); `droptrace lab down` removes it"
    )
    pods = labpods.refs(prefix)
    if pods:
        _progress(
            f"pods: {' '.join(pods)}, named from node-local facts (kubelet dirs under "
            f"{labpods.lab_root()}); e.g. `droptrace --pod {pods[0].split('/')[1]} "
            f"-n {pods[0].split('/')[0]}`"
        )


@lab.command("down")
@_prefix_option
@one_line_errors
def lab_down(prefix: str) -> None:
    """Remove every lab namespace (and so its links and rules), also of a killed run."""
    from tracer.lab import runner

    runner.check_prefix(prefix)
    system.require_root()
    removed = runner.down(prefix)
    _progress(
        f"removed {len(removed)} lab namespaces" + (f": {' '.join(removed)}" if removed else "")
    )


# Scope of the commands that keep hooks in the kernel without a live view (record, serve).
_netns_option = click.option(
    "--netns", "netns_specs", multiple=True, metavar="NAME|PATH", help="Only this namespace."
)
_ip_option = click.option(
    "--ip", "cidrs", multiple=True, metavar="CIDR", help="Only from or to this network."
)


@main.command()
@_netns_option
@_ip_option
@click.option(
    "--size",
    type=click.IntRange(min=16, max=1 << 20),
    default=4096,
    show_default=True,
    help="Drops kept (the oldest are overwritten).",
)
@one_line_errors
def record(netns_specs: tuple[str, ...], cidrs: tuple[str, ...], size: int) -> None:
    """Start a flight recorder in the kernel that keeps recording after this command exits."""
    from tracer import recorder

    networks = _networks(cidrs)
    known = _checks()
    filters = _filters(known, _resolve(netns_specs), networks)
    _mount_filesystems()
    for note in recorder.start(filters, size, kernel_reasons=known.available):
        click.echo(f"droptrace: {note}", err=True)
    click.echo(
        f"droptrace: recorder pinned at {recorder.PIN_DIR}; `droptrace dump` reads it, "
        "`droptrace stop` removes it",
        err=True,
    )


@main.command()
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), help="Write here (mode 0600)."
)
@click.option("--redact", is_flag=True, help="Replace addresses and pod names with placeholders.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of Markdown.")
@one_line_errors
def dump(out: str | None, redact: bool, as_json: bool) -> None:
    """Write a bug report from the flight recorder, without stopping it."""
    from tracer import bugreport
    from tracer.sinks import report

    known = _prepare()
    doc = bugreport.build(Enricher(known))
    if redact:
        doc = report.redact(doc)
    text = report.to_json_text(doc) if as_json else report.to_markdown(doc)
    if out:
        bugreport.write_private(out, text)
        click.echo(f"droptrace: wrote {out} ({len(doc['drops'])} drops)", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@one_line_errors
def status() -> None:
    """Whether a flight recorder runs, since when, and what it counted."""
    from datetime import UTC, datetime

    from tracer import recorder

    system.require_root()
    if not recorder.running():
        click.echo("no flight recorder is running")
        return
    rec = recorder.read()
    since = datetime.fromtimestamp(rec.started_ns / 1e9, UTC).isoformat(timespec="seconds")
    click.echo(
        f"recording since {since} with {rec.hook}: {rec.stats.matched} drops counted, "
        f"{len(rec.events)} of {rec.slots} slots filled"
    )


@main.command()
@one_line_errors
def stop() -> None:
    """Detach and unpin the flight recorder; nothing of droptrace stays in the kernel."""
    from tracer import recorder

    system.require_root()
    click.echo("flight recorder stopped" if recorder.stop() else "no flight recorder was running")


@main.command()
@click.option(
    "--listen",
    default="127.0.0.1:9750",
    show_default=True,
    metavar="HOST:PORT",
    help="Serve /metrics and /healthz here (:PORT: every address).",
)
@click.option(
    "--node",
    envvar="NODE_NAME",
    metavar="NAME",
    help="The node label on every series and line  [default: $NODE_NAME, else the host name]",
)
@click.option(
    "--max-series",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    metavar="N",
    help='Label sets of droptrace_drops_total; beyond, drops are counted under "_other".',
)
@click.option(
    "--flow-limit",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    metavar="N",
    help="JSON lines per second per flow on stdout; the metrics count every drop.",
)
@_netns_option
@_ip_option
@one_line_errors
def serve(
    listen: str,
    node: str | None,
    max_series: int,
    flow_limit: int,
    netns_specs: tuple[str, ...],
    cidrs: tuple[str, ...],
) -> None:
    """Run as a node agent: Prometheus metrics, health, and JSON lines, until SIGTERM."""
    import socket

    from tracer import serve as agent

    address = agent.parse_listen(listen)
    networks = _networks(cidrs)
    known = _checks()
    filters = _filters(known, _resolve(netns_specs), networks)
    pods = PodIdentity.connect()
    _mount_filesystems()
    _sigterm_as_interrupt()
    where = f"{address[0]}:{address[1]}"
    agent.serve(
        filters,
        Enricher(known, pods),
        address,
        node or socket.gethostname(),
        max_series,
        flow_limit,
        note=lambda line: _tell([line]),
        on_ready=lambda: _tell([*pods.notes, f"serving /metrics and /healthz on {where}"]),
    )


@main.command()
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
    from tracer.hooks import DropTracer

    try:
        system.require_root()
        ref = netns.resolve(netns_spec)
        facts = doc.gather(ref)
    except (DroptraceError, OSError) as err:
        _fail(f"could not check: {err}", 2)
    findings = doc.check(facts)
    try:
        known = _prepare()
        with DropTracer(
            Filters(netns=(ref.inode,)), ring_bytes=4096, kernel_reasons=known.available
        ) as tracer:
            active, missing = tracer.hooks.active, tracer.hooks.unavailable
            optional = tracer.hooks.optional
        findings += doc.hook_findings(active, missing, optional, known.available)
    except (DroptraceError, OSError) as err:
        findings.append(doc.Finding(doc.Level.FAIL, f"no drop hook can be attached: {err}"))
    colors = {doc.Level.OK: "green", doc.Level.WARN: "yellow", doc.Level.FAIL: "red"}
    for f in findings:
        line = f"{click.style(f'{f.level:<4}', fg=colors[f.level])}  {f.what}"
        click.echo(line + (f"\n      fix: {f.fix}" if f.fix else ""))
    sys.exit(1 if any(f.level is not doc.Level.OK for f in findings) else 0)
