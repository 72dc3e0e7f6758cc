"""The flight recorder: drops recorded while nobody watches, dumped into a bug report."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    MakeNetns,
    link,
    loaded_droptrace_programs,
    router_pair,
    run_cli,
    send_udp,
    sh,
)
from tests.test_reliability import storm, storm_namespace
from tracer.recorder import PIN_DIR

pytestmark = pytest.mark.root


@pytest.fixture
def stopped_after() -> Iterator[None]:
    yield
    run_cli("stop")
    assert not PIN_DIR.exists()
    assert loaded_droptrace_programs() == []


def test_record_survives_the_cli_and_dumps_a_private_exact_report(
    netns: MakeNetns, stopped_after: None, tmp_path: Path
) -> None:
    ns = netns("rec")
    assert run_cli("record", "--netns", ns).rc == 0  # the CLI has exited: the kernel records
    again = run_cli("record")
    assert again.rc == 1 and "already running" in again.stderr
    send_udp(ns, "127.0.0.1", 9, n=7)
    sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", ns=ns)
    send_udp(ns, "127.0.0.1", 9, n=5)
    out = tmp_path / "r.md"
    res = run_cli("dump", "--out", str(out))
    assert res.rc == 0, res.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    text = out.read_text()
    assert "| NO_SOCKET | __udp4_lib_rcv | lo | " + ns + " | 12 |" in text
    assert os.uname().release in text and "tp_btf/kfree_skb" in text
    assert "net.ipv4.conf.all.rp_filter = 1" in text  # the namespace's sysctls are in it
    doc = json.loads(run_cli("dump", "--json").stdout)
    assert doc["totals"]["per_reason"] == {"NO_SOCKET": 12}
    assert len(doc["drops"]) == 12 and doc["drops"][0]["dport"] == 9
    status = run_cli("status")
    assert "12 drops counted" in status.stdout


def test_redacted_report_has_no_real_address(netns: MakeNetns, stopped_after: None) -> None:
    ns = netns("red")
    sh("ip", "addr", "add", "198.51.100.23/32", "dev", "lo", ns=ns)
    assert run_cli("record", "--netns", ns).rc == 0
    send_udp(ns, "198.51.100.23", 9, n=2)
    res = run_cli("dump", "--redact")
    assert res.rc == 0, res.stderr
    assert "198.51.100.23" not in res.stdout and "ip-1" in res.stdout
    assert os.uname().nodename not in res.stdout


def test_ring_wraps_and_keeps_the_newest(netns: MakeNetns, stopped_after: None) -> None:
    ns = netns("wrap")
    assert run_cli("record", "--netns", ns, "--size", "16").rc == 0
    for port in range(1000, 1040):
        send_udp(ns, "127.0.0.1", port, n=1)
    doc = json.loads(run_cli("dump", "--json").stdout)
    assert doc["totals"]["matched"] == 40
    assert [d["dport"] for d in doc["drops"]] == list(range(1024, 1040))


def test_stop_leaves_nothing_and_dump_without_recorder_is_one_line(stopped_after: None) -> None:
    assert run_cli("record").rc == 0
    assert run_cli("stop").stdout.strip() == "flight recorder stopped"
    assert not PIN_DIR.exists()
    assert loaded_droptrace_programs() == []
    res = run_cli("dump")
    assert (
        res.rc == 1 and res.stderr.strip().count("\n") == 0 and "no flight recorder" in res.stderr
    )


def test_record_replaces_stale_pins_of_a_crashed_recorder(stopped_after: None) -> None:
    PIN_DIR.mkdir(parents=True, exist_ok=True)  # what a crash between mkdir and pin leaves
    res = run_cli("record")
    assert res.rc == 0 and "stale pins" in res.stderr


def test_forwarding_drops_recorded_unwatched_are_explained_in_the_dump(
    netns: MakeNetns, stopped_after: None, tmp_path: Path
) -> None:
    client, router = router_pair(netns)
    link(router, netns("srv"), "r-srv", "eth0", "198.51.100.1/24", "198.51.100.2/24")
    sh("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=router)
    assert run_cli("record", "--netns", router).rc == 0
    send_udp(client, "198.51.100.2", 5353, n=3)
    out = tmp_path / "r.md"
    assert run_cli("dump", "--out", str(out)).rc == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    text = out.read_text()
    assert text.count("**forwarding_disabled**") == 3
    assert "sysctl -w net.ipv4.ip_forward=1" in text
    assert f"### netns {router}" in text and "net.ipv4.conf.r-cli.rp_filter = " in text
    assert os.uname().release in text


def test_a_flood_of_one_cause_does_not_push_out_the_drops_before_it(
    netns: MakeNetns, stopped_after: None
) -> None:
    ns = storm_namespace(netns)
    assert run_cli("record", "--netns", ns, "--size", "1024", "--cause-rate", "50").rc == 0
    send_udp(ns, "127.0.0.1", 4242, n=1)  # a rare drop: on lo, another cause than the flood's
    with storm(ns, rate=2000, seconds=3):  # ~6,000 drops of one cause on st1
        time.sleep(3.5)
    doc = json.loads(run_cli("dump", "--json").stdout)
    assert [d for d in doc["drops"] if d["dport"] == 4242], "the flood overwrote the rare drop"
    t = doc["totals"]
    # At most 50 a second per CPU of the flood were kept; all of it was counted.
    assert t["matched"] > 3000 and t["held"] > 0
    assert sum(t["per_reason"].values()) == t["matched"]
    assert len(doc["drops"]) < 1024
    assert doc["recorder"]["cause_rate"] == 50


def test_a_recorder_of_another_version_is_one_line_not_misread(stopped_after: None) -> None:
    """A recorder left running across an upgrade: its slots are another size (here a map
    as an older droptrace pinned it, 88-byte events without packet bytes)."""
    assert run_cli("record").rc == 0
    (PIN_DIR / "recorder").unlink()
    sh("bpftool", "map", "create", str(PIN_DIR / "recorder"), "type", "percpu_array",
       "key", "4", "value", "88", "entries", "16", "name", "recorder")  # fmt: skip
    for command in ("dump", "status"):
        res = run_cli(command)
        assert res.rc == 1 and res.stderr.count("\n") == 1, res.stderr
        assert "another version of droptrace" in res.stderr and "88 bytes" in res.stderr
    (PIN_DIR / "counter_slots").unlink()  # older still: a map this version needs is missing
    res = run_cli("dump")
    assert res.rc == 1 and "it has no map counter_slots" in res.stderr, res.stderr
