"""Address types shared by every stage."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
