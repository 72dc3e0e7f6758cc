"""What `doctor` reads of a namespace and what it finds there."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tracer.model.devices import Link
from tracer.model.sockets import Socket


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    what: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceFacts:
    """The settings of one namespace the cause modules' doctor checks read."""

    name: str
    sysctls: dict[str, int | None]
    interfaces: list[str]  # with an IPv4 address, without lo
    bridges: list[str]
    masquerade: bool
    rule_counts: dict[str, int]  # iptables rules per backend (nft, legacy)
    unconditional_drops: list[str] = field(default_factory=list)  # rule texts, user chains
    links: list[Link] = field(default_factory=list)  # every device, lo included
    interfaces6: list[str] = field(default_factory=list)  # with a global IPv6 address
    # UDP sockets and TCP listeners, with their owners; the sysctls that bound their queues.
    sockets: tuple[Socket, ...] = ()
    socket_sysctls: dict[str, int | str | None] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"netns {self.name}"

    @property
    def routes_packets(self) -> bool:
        """Several addressed interfaces (IPv4 or IPv6) or a bridge: the namespace forwards
        between them."""
        return len(self.interfaces) >= 2 or len(self.interfaces6) >= 2 or bool(self.bridges)
