"""A bounded storm of UDP/IPv4 packets: sendmmsg(2) on a raw IP_HDRINCL socket.

Run inside the sender namespace: `python -m bench.storm --shape one|many ...`; prints one
JSON object {"sent": N, "seconds": S}. Stops after --packets or --seconds, whichever first.

Why hand-written: this kernel has no pktgen module and Python's socket module has no
sendmmsg; ctypes over libc's sendmmsg sends 1024 prebuilt packets per system call, so the
Python loop costs ~1 µs per batch and the kernel's per-packet work is what is measured.
A raw socket with our own headers lets the "many" shape vary the source port and the
destination address per packet without 64k sockets.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import socket
import struct
import sys
import time
from ipaddress import IPv4Address, IPv4Network

BATCH = 1024  # UIO_MAXIOV: the most messages one sendmmsg takes
FLOW_PORTS = 64512  # source ports 1024..65535 in the "many" shape
PAYLOAD = b"droptrace-bench!!!"  # 18 bytes: 46-byte IP packets, a minimum Ethernet frame


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


class _SockaddrIn(ctypes.Structure):
    _fields_ = (
        ("family", ctypes.c_uint16),
        ("port", ctypes.c_uint16),
        ("addr", ctypes.c_uint8 * 4),
        ("zero", ctypes.c_uint8 * 8),
    )


def _checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


def packet(src: IPv4Address, dst: IPv4Address, sport: int, dport: int) -> bytes:
    """IPv4 + UDP (checksum 0: none, allowed for IPv4) + payload."""
    udp_len = 8 + len(PAYLOAD)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, socket.IPPROTO_UDP, 0,
        src.packed, dst.packed,
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + struct.pack("!HHHH", sport, dport, udp_len, 0) + PAYLOAD


def flows(
    shape: str, src: IPv4Address, dst_net: IPv4Network, dport: int
) -> list[tuple[IPv4Address, int]]:
    """(destination, source port) of each packet of one cycle of the storm."""
    if shape == "one":
        return [(dst_net.network_address + 1, 40000)]
    hosts = dst_net.num_addresses
    base = dst_net.network_address
    return [(base + (i % hosts), 1024 + i) for i in range(FLOW_PORTS)]


class Storm:
    """Prebuilt packets and message headers; send() walks them in batches, wrapping around."""

    def __init__(self, shape: str, src: IPv4Address, dst_net: IPv4Network, dport: int) -> None:
        plan = flows(shape, src, dst_net, dport)
        # Pad to whole batches so a batch never wraps mid-array.
        while len(plan) % BATCH:
            plan = plan + plan[: BATCH - len(plan) % BATCH]
        self.n = len(plan)
        pkts = [packet(src, dst, sport, dport) for dst, sport in plan]
        self._buf = ctypes.create_string_buffer(b"".join(pkts))
        size = len(pkts[0])
        self._iov = (_Iovec * self.n)()
        self._addr = (_SockaddrIn * self.n)()
        self._msgs = (_Mmsghdr * self.n)()
        base = ctypes.addressof(self._buf)
        for i, (dst, _) in enumerate(plan):
            self._iov[i].base, self._iov[i].len = base + i * size, size
            self._addr[i].family = socket.AF_INET
            self._addr[i].addr[:] = list(dst.packed)
            m = self._msgs[i].hdr
            m.name = ctypes.addressof(self._addr[i])
            m.namelen = ctypes.sizeof(_SockaddrIn)
            m.iov = ctypes.pointer(self._iov[i])
            m.iovlen = 1
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def run(self, packets: int, seconds: float) -> tuple[int, float]:
        """Send until `packets` or `seconds`; returns (packets sent, seconds taken)."""
        fd = self._sock.fileno()
        sendmmsg = self._libc.sendmmsg
        base = ctypes.addressof(self._msgs)
        msg_size = ctypes.sizeof(_Mmsghdr)
        sent = off = 0
        started = time.monotonic()
        deadline = started + seconds
        while sent < packets:
            want = min(BATCH, packets - sent, self.n - off)
            n = sendmmsg(fd, base + off * msg_size, want, 0)
            if n < 0:
                err = ctypes.get_errno()
                if err in (11, 105):  # EAGAIN, ENOBUFS: the device queue is full; go on
                    continue
                raise OSError(err, f"sendmmsg: {os.strerror(err)}")
            sent += n
            off = (off + n) % self.n
            if time.monotonic() >= deadline:
                break
        return sent, time.monotonic() - started

    def close(self) -> None:
        self._sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("one", "many"), default="one")
    p.add_argument("--src", type=IPv4Address, required=True)
    p.add_argument("--dst-net", type=IPv4Network, required=True)
    p.add_argument("--dport", type=int, default=9)
    p.add_argument("--packets", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    args = p.parse_args(argv)
    storm = Storm(args.shape, args.src, args.dst_net, args.dport)
    try:
        sent, seconds = storm.run(args.packets, args.seconds)
    finally:
        storm.close()
    json.dump({"sent": sent, "seconds": seconds}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
