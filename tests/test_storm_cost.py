"""What droptrace costs in a storm stays bounded, and what the user sees stays right: exact
totals, every distinct cause shown, the rest counted; caches that do not grow (issue 21).
The figures themselves are `make bench`'s, not asserted here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers import Droptrace, MakeNetns, link, send_udp, sh
from tests.test_reliability import storm, storm_namespace
from tracer.hooks import DEFAULT_CAUSE_RATE
from tracer.session import EXPLAINER_NICE
from tracer.system import conntrack
from tracer.system.netns import resolve

pytestmark = pytest.mark.root


def test_one_other_drop_in_a_many_flow_flood_is_still_shown(
    netns: MakeNetns, tmp_path: Path
) -> None:
    ns, other = storm_namespace(netns), netns("other")
    link(ns, other, "to-other", "eth0", "198.18.9.1/24", "198.18.9.2/24")
    summary = tmp_path / "summary.json"
    watch = ("--netns", ns, "--netns", other)
    args = ("--json", *watch, "--duration", "4", "--summary-json", str(summary))
    with storm(ns, rate=2000, seconds=6), Droptrace(*args) as dt:
        time.sleep(1.5)
        send_udp(ns, "198.18.9.2", 4242, n=1)  # another cause: a closed port next door
        res = dt.wait(timeout=60)
    assert res.rc == 0, res.stderr
    assert [e for e in res.events if e["netns"] == other and e["dport"] == 4242], res.stderr
    flood = [e for e in res.events if e["netns"] == ns]
    s = json.loads(summary.read_text())
    # The flood's one cause was explained a sample at a time; the rest were counted.
    assert 0 < len(flood) <= DEFAULT_CAUSE_RATE * (s["seconds"] + 1), len(flood)
    assert s["suppressed"] > 0
    assert s["shown"] + s["hidden"] + s["suppressed"] + s["lost"] == s["matched"], s
    assert s["totals"]["NO_SOCKET"] == s["matched"]
    assert s["cpu_seconds"]["explainer"] < s["seconds"]


def test_conntrack_sockets_stay_bounded_and_go_with_their_namespace(
    netns: MakeNetns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conntrack, "MAX_SOCKETS", 3)
    monkeypatch.setattr(conntrack, "_SWEEP_S", 0.0)
    names = [netns(f"ct{i}") for i in range(5)]
    lookups = conntrack.ConntrackLookups()
    try:
        for name in names:
            found = lookups.dnat_origin(
                resolve(name).path, 17, "198.51.100.3", 80, "192.0.2.1", 40000
            )
            assert found is None  # nothing was translated there
            assert len(lookups) <= 3
        sh("ip", "netns", "del", names[-1])
        lookups.dnat_origin(resolve(names[0]).path, 17, "198.51.100.3", 80, "192.0.2.1", 1)
        assert len(lookups) <= 3
        assert all(p.exists() for p in lookups._socks)  # the deleted one's socket is closed
    finally:
        lookups.close()


def test_the_explainer_runs_below_the_traffic(netns: MakeNetns) -> None:
    ns = netns("nice")
    with Droptrace("--json", "--netns", ns, "--duration", "30") as dt:
        send_udp(ns, "127.0.0.1", 9, n=1)  # the explainer is running by the first drop
        assert dt.wait_for_event(lambda e: e.get("dport") == 9, timeout=20), dt.stderr
        nice = {}  # thread id -> its nice value (field 19 of its stat)
        for task in Path(f"/proc/{dt.proc.pid}/task").iterdir():
            stat = (task / "stat").read_text()
            nice[int(task.name)] = int(stat[stat.rindex(")") + 2 :].split()[16])
        dt.interrupt()
        assert dt.wait(timeout=30).rc == 0
    assert sorted(nice.values()).count(EXPLAINER_NICE) == 1, nice  # the explainer
    assert nice[dt.proc.pid] == 0, nice  # the reader, which keeps the counts, is not lowered
