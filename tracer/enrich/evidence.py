"""The machine's state at the moment of a drop: sysctls, route lookups, conntrack.

What is read depends on the kernel's reason; each read is cached per (namespace, interface,
flow) for a short while, so a storm of identical drops costs one lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tracer.enrich import conntrack, routes, sysctl
from tracer.enrich.netns import NetnsNames, NetnsRef
from tracer.model import Drop

# Reasons the kernel gives when ip_route_input() ends in ip_error(): forwarding off, no
# route, or a blackhole/unreachable/prohibit route all look alike from the reason alone.
ROUTING_REASONS = {"IP_INNOROUTES", "IP_INADDRERRORS", "NOT_SPECIFIED", "IP_OUTNOROUTES", "UNKNOWN"}
_TTL = 2.0


class Evidence:
    def __init__(self, names: NetnsNames) -> None:
        self._names = names
        self._cache: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}

    def _cached(self, key: tuple[Any, ...], read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < _TTL:
            return dict(hit[1])
        try:
            value = read()
        except OSError as err:  # the namespace went away, or we may not enter it
            value = {"unreadable": str(err)}
        self._cache[key] = (now, value)
        if len(self._cache) > 4096:
            self._cache.clear()
        return dict(value)

    def gather(self, drop: Drop, reason: str, location: str, iface: str | None) -> dict[str, Any]:
        ref = self._names.lookup(drop.netns)
        if ref is None or drop.src is None or drop.dst is None:
            return {}
        if reason == "IP_RPFILTER" and iface:
            key: tuple[Any, ...] = ("rp", drop.netns, iface, drop.src)
            return self._cached(key, lambda: _rp_filter(ref, iface, str(drop.src)))
        if (reason in ROUTING_REASONS or location == "ip_error") and iface:
            key = ("route", drop.netns, iface, drop.src, drop.dst)
            return self._cached(key, lambda: _routing(ref, iface, str(drop.src), str(drop.dst)))
        if reason == "NO_SOCKET" and drop.sport is not None and drop.dport is not None:
            key = ("dnat", drop.l4proto, drop.src, drop.sport, drop.dst, drop.dport)
            return self._cached(key, lambda: self._dnat(drop))
        return {}

    def _dnat(self, drop: Drop) -> dict[str, Any]:
        assert drop.sport is not None and drop.dport is not None
        for ref in self._names.all():
            found = conntrack.dnat_origin(
                ref.path, drop.l4proto, str(drop.src), drop.sport, str(drop.dst), drop.dport
            )
            if found is None:
                continue
            knob = "net.bridge.bridge-nf-call-iptables"
            value = sysctl.read(ref.path, [knob])[knob]
            return {
                "dnat": {
                    "netns": ref.name,
                    "service": f"{found.original_dst}:{found.original_dport}",
                    "backend": found.backend,
                    "conntrack_state": found.state,
                },
                "bridge_nf_call_iptables": value,  # None: br_netfilter is not loaded there
            }
        return {}


def _rp_filter(ref: NetnsRef, iface: str, src: str) -> dict[str, Any]:
    k_all, k_if = "net.ipv4.conf.all.rp_filter", sysctl.conf_key(iface, "rp_filter")
    vals = sysctl.read(ref.path, [k_all, k_if])
    v_all, v_if = vals[k_all] or 0, vals[k_if] or 0
    back = routes.lookup(ref.path, src)
    return {
        "rp_filter": {"all": v_all, iface: v_if, "effective": max(v_all, v_if)},
        "route_back": back.as_evidence(),
    }


def _routing(ref: NetnsRef, iface: str, src: str, dst: str) -> dict[str, Any]:
    keys = [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.forwarding",
        sysctl.conf_key(iface, "forwarding"),
    ]
    vals = sysctl.read(ref.path, keys)
    return {
        "forwarding": {"ip_forward": vals[keys[0]], "all": vals[keys[1]], iface: vals[keys[2]]},
        "route": routes.lookup(ref.path, dst).as_evidence(),
        "route_as_received": routes.lookup(ref.path, dst, src=src, iif=iface).as_evidence(),
    }
