"""Neighbour (ARP/ND) entries and on-link subnets of a namespace (pyroute2 RTM_GETNEIGH)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from tracer.system import netns
from tracer.system.netlink import IPRoute

# NUD_* states (linux/neighbour.h), by bit.
_STATES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}


@dataclass(frozen=True, slots=True)
class NeighbourView:
    state: str | None  # None: no entry (it failed and was removed, or never asked)
    lladdr: str | None
    subnets: dict[str, list[str]]  # device -> its addresses' networks


def view(ns_path: Path, addr: str, dev: str | None) -> NeighbourView:
    """The entry for `addr` on `dev`, and the subnets of every device (which link is it on?)."""

    def read() -> NeighbourView:
        with IPRoute() as ipr:
            names = {int(x["index"]): str(x.get_attr("IFLA_IFNAME")) for x in ipr.get_links()}
            subnets: dict[str, list[str]] = {}
            for a in ipr.get_addr():
                net = ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                subnets.setdefault(names.get(int(a["index"]), "?"), []).append(str(net.network))
            family = 10 if ":" in addr else 2
            state = lladdr = None
            for n in ipr.get_neighbours(family=family):
                if n.get_attr("NDA_DST") != addr or (dev and names.get(int(n["ifindex"])) != dev):
                    continue
                state = "|".join(v for bit, v in _STATES.items() if n["state"] & bit) or None
                lladdr = n.get_attr("NDA_LLADDR")
            return NeighbourView(state, lladdr, subnets)

    return netns.run_in(ns_path, read)
