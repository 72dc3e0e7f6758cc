"""Conntrack lookups inside a namespace (pyroute2 over ctnetlink)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError

from tracer.model.net import IPAddress
from tracer.system import netns


@dataclass(frozen=True, slots=True)
class DnatOrigin:
    """A connection whose reply should have come from `original_dst`, not from the backend."""

    original_dst: IPAddress
    original_dport: int | None
    backend: str
    state: str | None


def dnat_origin(
    ns_path: Path, proto: int, src: str, sport: int, dst: str, dport: int
) -> DnatOrigin | None:
    """The DNAT'd connection for which the packet src:sport -> dst:dport is the reply, if any.

    A reply that comes straight from the backend (its own address, not the service's) is one
    that bypassed the un-DNAT: conntrack in this namespace saw the request but not the reply.
    """

    def find() -> DnatOrigin | None:
        try:
            with Conntrack() as ct:
                for e in ct.dump_entries():
                    o, r = e.tuple_orig, e.tuple_reply
                    if (r.proto, r.saddr, r.sport, r.daddr, r.dport) != (
                        proto,
                        src,
                        sport,
                        dst,
                        dport,
                    ):
                        continue
                    if o.daddr == src:
                        continue  # not translated: the reply source is the real peer
                    state = e.protoinfo.state_name() if e.protoinfo is not None else None
                    return DnatOrigin(ip_address(o.daddr), o.dport, src, state)
        except (NetlinkError, OSError):
            return None
        return None

    return netns.run_in(ns_path, find)
