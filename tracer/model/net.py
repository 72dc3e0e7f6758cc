"""Address types shared by every stage."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def endpoint(addr: IPAddress, port: int | None) -> str:
    """`addr:port` ([addr]:port for IPv6), or the address alone without a port."""
    if port is None:
        return str(addr)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
