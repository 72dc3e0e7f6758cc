"""Route lookups inside a namespace, as the kernel would make them (pyroute2 RTM_GETROUTE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from tracer.enrich import netns

# rtm_type values (linux/rtnetlink.h)
_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}


@dataclass(frozen=True, slots=True)
class RouteLookup:
    dst: str
    kind: str  # unicast, local, blackhole, unreachable, prohibit, none (no route at all)
    oif: str | None = None
    gateway: str | None = None
    table: int | None = None
    error: str | None = None

    def as_evidence(self) -> dict[str, object]:
        return {
            k: v
            for k, v in {
                "dst": self.dst,
                "type": self.kind,
                "oif": self.oif,
                "via": self.gateway,
                "table": self.table,
                "error": self.error,
            }.items()
            if v is not None
        }


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
            try:
                msg = ipr.route("get", **kwargs)[0]
            except NetlinkError as err:
                return RouteLookup(
                    dst, "none", error=err.args[1] if len(err.args) > 1 else str(err)
                )
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
            )

    return netns.run_in(ns_path, get)
