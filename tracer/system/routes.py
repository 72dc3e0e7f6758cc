"""Route lookups inside a namespace, as the kernel would make them (pyroute2 RTM_GETROUTE)."""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from tracer.model.evidence import RouteLookup
from tracer.system import netns
from tracer.system.netlink import IPRoute, NetlinkError

# rtm_type values (linux/rtnetlink.h)
_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
# RTM_GETROUTE answers a blackhole/unreachable/prohibit route with an error, not the route
# (even with fibmatch): the errno says which kind matched; the route itself is then found
# in the dump to name its table.
_ERRNO_KINDS = {
    errno.EINVAL: "blackhole",
    errno.EHOSTUNREACH: "unreachable",
    errno.EACCES: "prohibit",
}
_TYPE_NUMBERS = {v: k for k, v in _TYPES.items()}
_BUILTIN_TABLES = {255: "local", 254: "main", 253: "default"}


def lookup(ns_path: Path, dst: str, src: str | None = None, iif: str | None = None) -> RouteLookup:
    """`ip route get DST [from SRC iif IIF]` inside the namespace."""

    def get() -> RouteLookup:
        with IPRoute() as ipr:
            kwargs: dict[str, object] = {"dst": dst}
            if src and iif:
                kwargs["src"] = src
                idx = ipr.link_lookup(ifname=iif)
                if idx:
                    kwargs["iif"] = idx[0]
            rule = _policy_rule(ipr, src, iif) if src else None
            try:
                msg = ipr.route("get", **kwargs)[0]
            except NetlinkError as err:
                kind = _ERRNO_KINDS.get(err.code, "none")
                table = _table_of(ipr, kind, dst) if kind != "none" else None
                if kind != "none" and table is None:
                    kind = "none"  # an error that is not one of those routes after all
                message = err.args[1] if len(err.args) > 1 else str(err)
                return RouteLookup(dst, kind, table=table, error=message, policy_rule=rule)
            oif_idx = msg.get_attr("RTA_OIF")
            oif = None
            if oif_idx:
                links = ipr.get_links(oif_idx)
                oif = links[0].get_attr("IFLA_IFNAME") if links else None
            return RouteLookup(
                dst,
                _TYPES.get(int(msg["type"]), str(msg["type"])),
                oif=oif,
                gateway=msg.get_attr("RTA_GATEWAY"),
                table=msg.get_attr("RTA_TABLE"),
                policy_rule=rule,
            )

    return netns.run_in(ns_path, get)


def _table_of(ipr: IPRoute, kind: str, dst: str) -> int | None:
    """Table of the longest route of this kind covering dst (lowest table id on a tie)."""
    addr = ipaddress.ip_address(dst)
    best: tuple[int, int] | None = None
    for r in ipr.get_routes(family=2 if addr.version == 4 else 10):  # every table
        if r["type"] != _TYPE_NUMBERS[kind]:
            continue
        prefix = r.get_attr("RTA_DST") or ("0.0.0.0" if addr.version == 4 else "::")
        if addr not in ipaddress.ip_network(f"{prefix}/{r['dst_len']}", strict=False):
            continue
        table = r.get_attr("RTA_TABLE") or r["table"]
        if best is None or r["dst_len"] > best[0]:
            best = (r["dst_len"], table)
    return best[1] if best else None


def _policy_rule(ipr: IPRoute, src: str | None, iif: str | None) -> str | None:
    """The first `ip rule` (by priority) matching the source that looks up a non-main table.

    Only source and input-interface selectors are compared: enough to name the rule that
    sent a flow to another table; rules on marks, ports or tos are left out.
    """
    if src is None:
        return None
    addr = ipaddress.ip_address(src)
    rules = sorted(
        ipr.get_rules(family=2 if addr.version == 4 else 10),
        key=lambda r: r.get_attr("FRA_PRIORITY") or 0,
    )
    for r in rules:
        table = r.get_attr("FRA_TABLE") or r["table"]
        if r["action"] != 1 or table in _BUILTIN_TABLES:
            continue  # not a lookup, or one of the default local/main/default rules
        rule_src, rule_iif = r.get_attr("FRA_SRC"), r.get_attr("FRA_IIFNAME")
        if rule_src and addr not in ipaddress.ip_network(f"{rule_src}/{r['src_len']}", False):
            continue
        if rule_iif and rule_iif != iif:
            continue
        if r.get_attr("FRA_DST") or r.get_attr("FRA_FWMARK"):
            continue  # selectors not compared here: do not claim this rule matched
        selector = f"from {rule_src}" if rule_src else "from all"
        if rule_iif:
            selector += f" iif {rule_iif}"
        return f"{r.get_attr('FRA_PRIORITY') or 0}: {selector} lookup {table}"
    return None


@dataclass(frozen=True, slots=True)
class Egress:
    """Where the route to a destination leaves, and a path MTU the kernel learnt for it."""

    oif: str | None
    gateway: str | None
    pmtu: int | None


def egress(ns_path: Path, dst: str, src: str | None = None) -> Egress | None:
    """The route a packet to dst (from src, one of the namespace's own addresses) would
    take; None where there is none."""

    def get() -> Egress | None:
        with IPRoute() as ipr:
            kwargs: dict[str, object] = {"dst": dst}
            if src:
                kwargs["src"] = src
            try:
                msg = ipr.route("get", **kwargs)[0]
            except NetlinkError:
                return None
            oif_idx = msg.get_attr("RTA_OIF")
            links = ipr.get_links(oif_idx) if oif_idx else []
            metrics = msg.get_attr("RTA_METRICS")
            pmtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
            return Egress(
                links[0].get_attr("IFLA_IFNAME") if links else None,
                msg.get_attr("RTA_GATEWAY"),
                int(pmtu) if pmtu else None,
            )

    return netns.run_in(ns_path, get)
