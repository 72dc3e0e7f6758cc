"""Every field report, rebuilt by the lab users run, diagnosed with its category, then gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import lab_prefix, run_cli
from tracer.lab.runner import lab_namespaces
from tracer.lab.scenarios import SCENARIOS, Scenario

pytestmark = pytest.mark.root


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_is_diagnosed_where_it_happens_and_leaves_nothing(s: Scenario) -> None:
    prefix = lab_prefix()
    try:
        res = run_cli("lab", "run", s.name, "--json", "--prefix", prefix)
        assert res.rc == 0, res.stderr
        events = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
        hits = [
            e for e in events if e["category"] == s.category and e["netns"] == prefix + s.drop_node
        ]
        assert hits, f"no {s.category} drop in {prefix + s.drop_node}: {events}"
        assert hits[0]["iface"] == s.drop_iface
        assert hits[0]["explanation"]
        assert lab_namespaces(prefix) == []
    finally:
        run_cli("lab", "down", "--prefix", prefix)


def test_lab_down_cleans_up_a_killed_run() -> None:
    prefix = lab_prefix()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "lab", "run", SCENARIOS[0].name, "--prefix", prefix],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "sending the failing traffic" in line:
                break
        assert lab_namespaces(prefix), "the lab was not up when the run was killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert lab_namespaces(prefix)  # a killed run cannot clean up after itself...
        res = run_cli("lab", "down", "--prefix", prefix)
        assert res.rc == 0, res.stderr
        time.sleep(0.2)
        assert lab_namespaces(prefix) == []  # ...and `lab down` does
    finally:
        proc.kill()
        run_cli("lab", "down", "--prefix", prefix)


def test_unknown_scenario_is_one_line() -> None:
    res = run_cli("lab", "run", "no-such-scenario")
    assert res.rc == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "unknown lab scenario" in res.stderr
