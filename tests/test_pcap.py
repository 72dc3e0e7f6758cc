"""`--pcap`: the packets the kernel dropped, opened in tshark with why each one died as its
comment; live, from the flight recorder, and redacted for posting (issue 22)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import Droptrace, MakeNetns, link, run_cli, send_udp
from tests.test_recorder import stopped_after  # noqa: F401  (fixture)

pytestmark = pytest.mark.root

CLIENT, SERVER = "192.0.2.1", "192.0.2.2"
FIELDS = ("ip.src", "ip.dst", "udp.srcport", "udp.dstport", "frame.len", "frame.cap_len",
          "frame.interface_name", "frame.comment")  # fmt: skip


def tshark(path: Path, *fields: str, prefs: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Each packet of a pcapng file as tshark reads it: {field: value}."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=\t"]
    for pref in prefs:
        args += ["-o", pref]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]


def closed_port_pair(netns: MakeNetns) -> tuple[str, str]:
    """A client and a server namespace on one link; nothing listens on the server."""
    client, server = netns("pc-cli"), netns("pc-srv")
    link(client, server, "eth0", "eth0", f"{CLIENT}/24", f"{SERVER}/24")
    return client, server


def assert_udp_drops(packets: list[dict[str, str]], server: str, dport: int, n: int) -> None:
    assert len(packets) == n, packets
    for p in packets:
        assert (p["ip.src"], p["ip.dst"], p["udp.dstport"]) == (CLIENT, SERVER, str(dport)), p
        assert p["frame.interface_name"] == f"eth0@{server}", p
        assert p["frame.comment"].startswith("NO_SOCKET [no_socket] at __udp4_lib_rcv"), p
        assert "no socket listens on the destination port" in p["frame.comment"], p
        # 20 IP + 8 UDP + 9 payload bytes, all captured, the length as the IP header has it.
        assert p["frame.len"] == p["frame.cap_len"] == "37", p


def test_live_pcap_of_udp_drops_opens_in_tshark_with_why_each_died(
    netns: MakeNetns, tmp_path: Path
) -> None:
    client, server = closed_port_pair(netns)
    out = tmp_path / "live.pcapng"
    args = ("--json", "--pcap", str(out), "--netns", server, "--duration", "3")
    with Droptrace(*args) as dt:
        send_udp(client, SERVER, 9, n=3)
        res = dt.wait(timeout=30)
    assert res.rc == 0, res.stderr
    drops = [e for e in res.events if e.get("dport") == 9]
    assert len(drops) == 3, res.stderr
    assert f"wrote 3 packets to {out}" in res.stderr
    assert (out.stat().st_mode & 0o777) == 0o600
    packets = tshark(out, *FIELDS)
    assert_udp_drops(packets, server, 9, 3)
    assert [p["udp.srcport"] for p in packets] == [str(e["sport"]) for e in drops]
    # Each packet carries its drop's time, as --json gives it (microseconds).
    times = tshark(out, "frame.time_epoch")
    for t, e in zip(times, drops, strict=True):
        wall = e["time"].replace("Z", "+00:00")
        assert abs(float(t["frame.time_epoch"]) - datetime.fromisoformat(wall).timestamp()) < 1e-5


def test_ctrl_c_leaves_a_complete_file(netns: MakeNetns, tmp_path: Path) -> None:
    """No --duration, no --json (the live view's rows on a pipe): Ctrl-C ends it, the file is
    closed whole, and the line says how many packets it holds."""
    client, server = closed_port_pair(netns)
    out = tmp_path / "ctrl-c.pcapng"
    with Droptrace("--pcap", str(out), "--netns", server) as dt:
        send_udp(client, SERVER, 9, n=2)
        deadline = time.monotonic() + 20
        while "".join(dt._out).count("NO_SOCKET") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        dt.interrupt()
        res = dt.wait(timeout=30)
    assert res.rc == 0, res.stderr
    assert f"wrote 2 packets to {out}" in res.stderr
    assert_udp_drops(tshark(out, *FIELDS), server, 9, 2)


def test_recorded_drops_dump_as_pcapng(
    netns: MakeNetns,
    stopped_after: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    client, server = closed_port_pair(netns)
    started = run_cli("record", "--netns", server)
    assert started.rc == 0 and "with their first 128 bytes" in started.stderr, started.stderr
    send_udp(client, SERVER, 7, n=4)
    out = tmp_path / "rec.pcapng"
    res = run_cli("dump", "--pcap", str(out))
    assert res.rc == 0, res.stderr
    assert res.stdout == ""  # with --pcap alone, no report
    assert f"wrote 4 packets to {out}" in res.stderr
    assert_udp_drops(tshark(out, *FIELDS), server, 7, 4)
    both = run_cli("dump", "--pcap", str(tmp_path / "again.pcapng"), "--json")
    assert both.rc == 0, both.stderr
    assert len(json.loads(both.stdout)["drops"]) == 4  # --json still prints the report


def test_a_recorder_without_packet_bytes_says_so(
    netns: MakeNetns,
    stopped_after: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    client, server = closed_port_pair(netns)
    started = run_cli("record", "--netns", server, "--capture-bytes", "0")
    assert started.rc == 0 and "no packet bytes" in started.stderr, started.stderr
    send_udp(client, SERVER, 7, n=2)
    out = tmp_path / "none.pcapng"
    res = run_cli("dump", "--pcap", str(out))
    assert res.rc == 0, res.stderr
    assert f"wrote 0 packets to {out}; skipped drops: 2 without packet bytes" in res.stderr
    assert tshark(out, "frame.number") == []


def test_redacted_pcapng_has_none_of_the_real_addresses(
    netns: MakeNetns,
    stopped_after: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    client, server = closed_port_pair(netns)
    assert run_cli("record", "--netns", server).rc == 0
    send_udp(client, SERVER, 7, n=2, size=40)  # 40 x b"x": payload that must be cut
    out, report = tmp_path / "red.pcapng", tmp_path / "red.json"
    res = run_cli("dump", "--redact", "--pcap", str(out), "--out", str(report), "--json")
    assert res.rc == 0, res.stderr
    fields = ("ip.src", "ip.dst", "ip.checksum.status", "udp.dstport", "frame.cap_len",
              "frame.len", "frame.comment")  # fmt: skip
    packets = tshark(out, *fields, prefs=("ip.check_checksum:TRUE",))
    assert len(packets) == 2, packets
    doc = json.loads(report.read_text())
    (src,) = {d["src"] for d in doc["drops"]}  # ip-N: the same N as the packet's placeholder
    (dst,) = {d["dst"] for d in doc["drops"]}
    for p in packets:
        assert p["ip.src"] == f"240.0.0.{src.removeprefix('ip-')}", (p, src)
        assert p["ip.dst"] == f"240.0.0.{dst.removeprefix('ip-')}", (p, dst)
        assert p["ip.checksum.status"] == "1", p  # good: recomputed over the new addresses
        assert p["udp.dstport"] == "7" and p["frame.cap_len"] == "28", p  # IP + UDP only
        assert p["frame.len"] == "68", p  # the packet's real length stays
        assert p["frame.comment"].startswith("NO_SOCKET [no_socket]"), p
    raw = out.read_bytes()
    text = json.dumps(tshark(out, *fields, "frame.interface_name"))
    for real in (CLIENT, SERVER):
        assert real not in text and real.encode() not in raw
        assert socket.inet_aton(real) not in raw
    assert b"x" * 8 not in raw


@pytest.mark.parametrize("where", ["no-such-dir/f.pcapng", ".", "unwritable"])
def test_a_pcap_path_that_cannot_be_written_is_one_line_before_attaching(
    tmp_path: Path, where: str
) -> None:
    """A missing directory, a directory, a directory the user cannot write in (nobody, in
    root's 0700 tmp_path): refused in one line, before anything is loaded."""
    path = str(tmp_path / ("f.pcapng" if where == "unwritable" else where))
    user = 65534 if where == "unwritable" else None
    for args in (("--pcap", path, "--duration", "1"), ("dump", "--pcap", path)):
        res = run_cli(*args, user=user)
        assert res.rc == 2, res
        assert res.stderr.startswith("droptrace: ") and "--pcap" in res.stderr, res.stderr
        assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
        assert not Path(path).is_file()
