"""`droptrace doctor`: the known-bad settings behind each drop cause, checked before any packet
is lost. `gather` reads one namespace; each cause module (tracer.diagnose) checks its own
setting with the same advice its live explanation gives."""

from __future__ import annotations

from socket import IPPROTO_TCP, IPPROTO_UDP

from tracer import diagnose
from tracer.errors import DroptraceError
from tracer.hooks import DropTracer
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.model.sockets import Socket
from tracer.model.tracing import Filters, HookReport, HookState
from tracer.system import host, links, netns, sockets, sysctl
from tracer.system.iptables import SAVES, parse_iptables_save
from tracer.system.kernel import DropReasons
from tracer.system.netns import NetnsRef

_BUILTIN_CHAINS = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}


def gather(ref: NetnsRef) -> NamespaceFacts:
    path = ref.path
    drops = []
    for cmd, family in SAVES:
        text = netns.command(path, cmd, "-c")
        for r in parse_iptables_save(text, family):
            if r.matches_everything and r.rule.chain not in _BUILTIN_CHAINS:
                drops.append(f"{cmd.split('-save')[0]} -t {r.rule.table} {r.rule.text}")
    socks, socket_sysctls = _sockets(ref)
    return NamespaceFacts(
        name=ref.name,
        sysctls=host.sysctls(path),
        interfaces=host.addressed_interfaces(path),
        bridges=host.bridges(path),
        masquerade=host.masquerades(path),
        rule_counts=host.rule_counts(path),
        unconditional_drops=drops,
        links=links.all_links(path),
        interfaces6=host.addressed_interfaces(path, family=10),
        sockets=socks,
        socket_sysctls=socket_sysctls,
    )


def _sockets(ref: NetnsRef) -> tuple[tuple[Socket, ...], dict[str, int | str | None]]:
    """UDP sockets and TCP listeners that dropped (or are full now), with their owners."""
    found = sockets.sockets(ref.path, IPPROTO_UDP)
    found += sockets.sockets(ref.path, IPPROTO_TCP, sockets.LISTEN)
    bad = [s for s in found if (s.drops or 0) > 0 or (s.listening and s.full)]
    values = sockets.buffer_sysctls(ref.path, "udp")
    values |= sysctl.read(ref.path, ["net.core.somaxconn"])
    return tuple(sockets.with_owners(ref.inode, bad)), values


def check(f: NamespaceFacts) -> list[Finding]:
    return diagnose.doctor(f)


def hook_findings(report: HookReport) -> list[Finding]:
    """Which hooks droptrace attached; cause hooks matter only where kfree_skb has no reason."""
    out = [Finding(Level.OK, f"hooks active: {', '.join(report.active)}")]
    for h in report.hooks:
        if h.state is HookState.ACTIVE:
            continue
        if not h.cause:
            out.append(Finding(Level.WARN, f"hook unavailable: {h.line()}"))
        elif report.kernel_reasons:
            what = f"cause hook not attached (kfree_skb gives reasons here): {h.line()}"
            out.append(Finding(Level.OK, what))
        else:
            out.append(
                Finding(
                    Level.WARN,
                    f"cause hook unavailable on a kernel without drop reasons: {h.line()}",
                    "rp_filter or netfilter drops may show as category other; a kernel with"
                    " kprobes or fexit (or 5.17+) names them",
                )
            )
    return out


def hooks_check(ref: NetnsRef, reasons: DropReasons) -> list[Finding]:
    """Load (and at once unload) the hooks droptrace would use here, and say which the kernel
    allows."""
    try:
        with DropTracer(
            Filters(netns=(ref.inode,)), ring_bytes=4096, kernel_reasons=reasons.available
        ) as tracer:
            return hook_findings(tracer.hooks)
    except (DroptraceError, OSError) as err:
        return [Finding(Level.FAIL, f"no drop hook can be attached: {err}")]
