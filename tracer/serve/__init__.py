"""`droptrace serve`, the node agent: its defaults and address parsing here (read by the CLI
without loading the server), the server itself in agent.py."""

from __future__ import annotations

from ipaddress import ip_address

from tracer.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:9750"
DEFAULT_FLOW_LIMIT = 5  # JSON lines per second per flow: enough to see it, not a log flood
DEFAULT_MAX_SERIES = 2000  # label sets of droptrace_drops_total before "_other"


class ListenError(UsageError):
    pass


def parse_listen(spec: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT (every address) -> (host, port)."""
    host, sep, port_text = spec.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ListenError(f"--listen {spec!r} is not HOST:PORT (e.g. 127.0.0.1:9750)")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    try:
        ip_address(host)
    except ValueError:
        raise ListenError(f"--listen {spec!r}: {host!r} is not an IP address") from None
    return host, int(port_text)
