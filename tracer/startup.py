"""One start-up for every command: what was asked (options) -> checks, mounts, pod sources,
the scope as kernel Filters, signals. Input that cannot be right is refused, in one line,
before anything is loaded; what the kernel or the host lacks is refused before anything is
attached."""

from __future__ import annotations

import contextlib
import difflib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from ipaddress import ip_network
from typing import TYPE_CHECKING

from tracer import libbpf, oneline
from tracer.errors import BadCidr, UnknownPod, UnknownReason, UsageError
from tracer.model.net import Network
from tracer.model.tracing import Filters
from tracer.pipeline import Pipeline
from tracer.system import netns, preflight
from tracer.system.kernel import DropReasons
from tracer.system.netns import NetnsNames, NetnsRef

if TYPE_CHECKING:  # enrichment, the pod sources and the counters load after the hooks attach
    from tracer.counters.source import CounterSource
    from tracer.enrich import Enricher
    from tracer.enrich.pods import PodIdentity

NO_REASONS_NOTE = "this kernel's kfree_skb has no drop reasons"


@dataclass(frozen=True, slots=True)
class Scope:
    """What the user asked to trace, as given on the command line."""

    pod: str | None = None
    namespace: str | None = None  # the pod's Kubernetes namespace
    netns: tuple[str, ...] = ()  # ip netns names or paths
    cidrs: tuple[str, ...] = ()
    iface: str | None = None
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class Started:
    """A command ready to trace: the kernel's reasons, the pod sources, the filters, and the
    namespaces it watches. `notes` are for the user once tracing (bad input stays one line)."""

    reasons: DropReasons
    pods: PodIdentity | None
    filters: Filters = field(default_factory=Filters)
    watched: list[NetnsRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The namespaces whose drop counters the run reads; None: every one (the whole host).
    counted: list[NetnsRef] | None = None
    # Whether a counter beyond the traced drops is told as it moves: not when --ip or --iface
    # leave out drops of the namespace on purpose (the summary still compares them).
    counters_live: bool = True
    want_pods: bool = False  # connect the pod sources when the pipeline is first used
    _pipeline: Pipeline | None = None

    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = Pipeline(self.reasons, self._enricher)
        return self._pipeline

    def _enricher(self) -> Enricher:
        from tracer.enrich import Enricher
        from tracer.enrich.pods import PodIdentity

        if self.want_pods and self.pods is None:
            pods = PodIdentity.connect()
            self.notes.extend(pods.notes)
            self.pods = pods
        return Enricher(self.reasons, self.pods)

    def counter_source(self, pipeline: Pipeline) -> CounterSource | None:
        """The kernel's drop counters of the namespaces in scope, or None (a --pod on
        another node has no namespace here). Names and pods come from the pipeline's
        enricher when first needed, after the hooks are attached."""
        from tracer.counters.source import CounterScope, CounterSource

        if self.counted is None:
            names = NetnsNames()  # its own: the explainer thread rescans the enricher's
            scope = CounterScope(names.all, host_wide=True)
        elif self.counted:
            refs = list(self.counted)
            host = any(r.path == netns.HOST_NETNS for r in refs)
            scope = CounterScope(lambda: refs, host_wide=host)
        else:
            return None
        f = self.filters
        wanted = frozenset(pipeline.reasons.name(r) for r in f.reasons)
        limits = [o for o, on in (("--ip/--pod", f.networks), ("--iface", f.ifindex)) if on]
        note = ""
        if limits:
            note = (
                f"traced drops are limited by {' and '.join(limits)}; the kernel's counters"
                " count every packet of the namespace"
            )
        scope = replace(scope, reasons=wanted, note=note, live=self.counters_live)
        return CounterSource(
            scope,
            pipeline.reasons.name,
            lambda inode, ifindex: pipeline.enricher.ifaces.name(inode, ifindex),
            lambda pid: pipeline.enricher.pods.of_process(pid),
        )

    def tell(self, to: Callable[[str], None], *more: str) -> None:
        """Say the notes, after loading the pipeline (whose pod sources add theirs): called
        once the hooks are attached, so that work does not delay them."""
        if self._pipeline is not None:
            self._pipeline.load()
        for line in (*self.notes, *more):
            to(line)

    @contextlib.contextmanager
    def watch(self, gone: Callable[[str], None]) -> Iterator[threading.Event]:
        """While tracing: the watched namespaces held and watched (see `watching`); the
        event is set when one is deleted, after gone(name)."""
        stop = threading.Event()
        with watching(self.watched, stop, gone):
            yield stop


def require_root() -> None:
    """All that the commands that load nothing (lab up/down, status, stop) need."""
    preflight.require_root()


def netns_ref(spec: str) -> NetnsRef:
    """A namespace given as an `ip netns` name, a path (/proc/PID/ns/net) or 'host'."""
    return netns.resolve(spec)


def start(
    scope: Scope = Scope(),
    *,
    pods: bool = False,
    signals: bool = True,
    note: Callable[[str], None] = lambda _: None,
) -> Started:
    """Checks, mounts, pod sources (with `pods` or a --pod), the scope's filters and, with
    `signals`, SIGTERM and SIGINT as Ctrl-C. `note` hears what the user should know now."""
    networks = parse_networks(scope.cidrs)
    for option, value in (("--pod", scope.pod), ("-n/--namespace", scope.namespace)):
        if value is not None and not value.strip():
            raise UsageError(f"{option} needs a name, not an empty string")
    if scope.iface is not None and not scope.iface.strip():
        raise UsageError("--iface needs an interface name, not an empty string")
    if scope.namespace and not scope.pod:
        raise UsageError("-n/--namespace picks the namespace of a --pod; give --pod NAME too")
    reasons = checks(note)
    identity, specs, notes = None, scope.netns, []
    counted: list[NetnsRef] | None = None
    if scope.pod or (pods and _api_configured()):
        # A --pod's addresses are kernel filters; and the API's list is taken before the
        # hooks attach, so the first drops are named by who had their addresses then (a
        # pod replaced a second later must not lend them its name). Without an API the
        # node's own sources load after the ready line.
        from tracer.enrich.pods import PodIdentity

        identity = PodIdentity.connect()
        notes = list(identity.notes)
    if scope.pod and identity is not None:
        specs, networks, where, counted = _pod_scope(identity, scope, networks)
        notes.insert(0, where)
    watched = [netns.resolve(s) for s in specs]
    filters = _filters(reasons, watched, networks, scope.iface, scope.reasons)
    if watched:
        counted = list({r.inode: r for r in (counted or []) + watched}.values())
    elif filters.netns:  # --iface alone: its namespace, the host
        counted = [netns.resolve("host")]
    preflight.ensure_mounts()  # quietly, as perf and bpftool do; a failure is an error
    if signals:
        oneline.sigterm_as_interrupt()
    live = not scope.cidrs and scope.iface is None
    return Started(reasons, identity, filters, watched, notes, counted, live, want_pods=pods)


def _api_configured() -> bool:
    from tracer.system.kubeconfig import configured

    return configured()


def checks(note: Callable[[str], None] = lambda _: None) -> DropReasons:
    """What every tracing command needs; returns the running kernel's drop reasons."""
    preflight.require_root()
    preflight.require_capabilities()
    preflight.require_btf()
    libbpf.lib()
    known = DropReasons()
    if not known.available:
        note(NO_REASONS_NOTE)
    return known


def parse_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
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
                hint = f"; {NO_REASONS_NOTE}"
            raise UnknownReason(f"unknown drop reason {name!r} for this kernel{hint}")
        out.append(value)
    return tuple(out)


def _pod_scope(
    pods: PodIdentity, scope: Scope, networks: tuple[Network, ...]
) -> tuple[tuple[str, ...], tuple[Network, ...], str, list[NetnsRef]]:
    """--pod as kernel filters: its addresses (so drops of its traffic on the node count
    too); a pod without addresses is watched in its own network namespace instead. The last
    item: the pod's namespace on this node, whose drop counters are the pod's."""
    assert scope.pod is not None
    found = pods.resolve(scope.pod, scope.namespace)
    specs = scope.netns
    counted = []
    if found.netns_path is not None and found.netns_inode is not None:
        counted.append(NetnsRef(found.netns_inode, found.ref, found.netns_path))
    if found.ips:
        networks = networks + tuple(ip_network(ip) for ip in found.ips)
    elif found.netns_path is not None:
        specs = (*specs, str(found.netns_path))
    else:
        raise UnknownPod(f"pod {found.ref} has no IP and does not run on this node")
    where = f" via {found.host_iface}" if found.host_iface else ""
    ips = ", ".join(str(ip) for ip in found.ips) or "no IP"
    return specs, networks, f"pod {found.ref} ({ips}{where})", counted


def _filters(
    known: DropReasons,
    refs: list[NetnsRef],
    networks: tuple[Network, ...],
    iface: str | None,
    reasons: tuple[str, ...],
) -> Filters:
    ifindex = 0
    if iface:
        from tracer.system import ifaces

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


@contextlib.contextmanager
def watching(
    refs: list[NetnsRef], stop: threading.Event, gone: Callable[[str], None]
) -> Iterator[None]:
    """While tracing, each watched namespace is held open, so the kernel cannot give its
    inode number to a new namespace whose drops the filter would then show as this one's.
    A named one (`ip netns`) that is deleted sets `stop` after gone(name). A /proc/PID/ns/net
    path is not watched: its process may end while the namespace lives on."""
    held = []
    for ref in refs:
        with contextlib.suppress(OSError):
            held.append(os.open(ref.path, os.O_RDONLY))
    named = [r for r in refs if r.path.parent in netns.NETNS_DIRS]
    done, lock = threading.Event(), threading.Lock()

    def deleted(ref: NetnsRef) -> bool:
        try:
            return netns.inode_of(ref.path) != ref.inode
        except OSError:
            return True

    def watch() -> None:
        while not done.wait(1.0):
            for ref in named:
                if deleted(ref):
                    with lock:  # never after the trace ended (and its summary)
                        if not done.is_set():
                            gone(ref.name)
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
