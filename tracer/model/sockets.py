"""Sockets as evidence: whose queue was full (a receive buffer, a listener's accept queue),
and the process that owns it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tracer.model.evidence import Evidence, Json

PodOf = Callable[[int], str | None]  # pid -> namespace/name of its pod


@dataclass(frozen=True, slots=True)
class Owner:
    """A process holding the socket (the lowest pid of those that do)."""

    pid: int
    command: str
    pod: str | None = None  # namespace/name


@dataclass(frozen=True, slots=True)
class Socket:
    """One socket as sock_diag shows it."""

    proto: str  # tcp, udp
    local: str  # ADDR:PORT, [ADDR]:PORT for IPv6
    remote: str | None  # connected sockets only
    state: str  # listen, established, unconnected, ...
    inode: int
    queued: int  # bytes waiting to be read; a listener: connections waiting for accept()
    limit: int  # the receive buffer's size in bytes; a listener: its backlog
    drops: int | None = None  # the socket's own drop count since it was made (sk_drops)
    owner: Owner | None = None

    @property
    def listening(self) -> bool:
        return self.state == "listen"

    @property
    def full(self) -> bool:
        """A listener's accept queue is full when it holds more than the backlog
        (sk_acceptq_is_full); a receive buffer when less than a datagram's worth is left."""
        if self.listening:
            return self.queued > self.limit
        return self.queued >= self.limit

    def who(self) -> str:
        """`pid 123 (nginx, pod shop/web-0)`, or that no process holds it."""
        o = self.owner
        if o is None:
            return "no process found holding it"
        pod = f", pod {o.pod}" if o.pod else ""
        return f"pid {o.pid} ({o.command}{pod})"

    def json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"proto": self.proto, "local": self.local}
        if self.remote is not None:
            out["remote"] = self.remote
        out["state"] = self.state
        if self.listening:
            out |= {"backlog": self.limit, "accept_queue": self.queued, "full": self.full}
        else:
            out |= {"rcvbuf": self.limit, "queued": self.queued}
        out["drops"] = self.drops
        out["inode"] = self.inode
        o = self.owner
        out |= {"pid": o.pid, "command": o.command, "pod": o.pod} if o else {"pid": None}
        return out


@dataclass(frozen=True, slots=True)
class SocketBuffer(Evidence):
    """The socket a packet was for when its receive buffer (or memory) was full, with the
    sysctls that bound that buffer."""

    socket: Socket | None  # None: no such socket any more
    sysctls: dict[str, int | str | None]  # net.core.rmem_max, ...

    def json(self) -> dict[str, Json]:
        sysctls: dict[str, Json] = dict(self.sysctls)
        return {"socket": self.socket.json() if self.socket else None, "rmem": sysctls}


@dataclass(frozen=True, slots=True)
class SocketsDropping(Evidence):
    """The sockets of a namespace that dropped for a full receive buffer, most first."""

    sockets: tuple[Socket, ...]
    sysctls: dict[str, int | str | None]

    def json(self) -> dict[str, Json]:
        sysctls: dict[str, Json] = dict(self.sysctls)
        return {"sockets": [s.json() for s in self.sockets], "rmem": sysctls}


@dataclass(frozen=True, slots=True)
class ListenQueue(Evidence):
    """Listening sockets (of a port, or those of a namespace that dropped) and
    net.core.somaxconn, which caps every backlog."""

    listeners: tuple[Socket, ...]
    somaxconn: int | None

    def json(self) -> dict[str, Json]:
        return {"listeners": [s.json() for s in self.listeners], "somaxconn": self.somaxconn}
