"""Every field report, rebuilt by the lab users run, diagnosed with its category, then gone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import k8s_ns, lab_prefix, run_cli
from tracer.lab.runner import lab_namespaces
from tracer.lab.scenarios import SCENARIOS, Scenario

pytestmark = pytest.mark.root

# The --json shape of every scenario's diagnosed drop, recorded before the restructuring
# (issue 16): field names, evidence keys, explanation and fix. DROPTRACE_RECORD_CONTRACT=1
# rewrites it from the current code.
CONTRACT = Path(__file__).with_name("lab_json_contract.json")


def _shape(value: Any) -> Any:
    """Keys all the way down; values only where they are not per-run (times, inodes)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


def _contract(event: dict[str, Any], prefix: str) -> dict[str, Any]:
    def text(v: str | None) -> str | None:
        if not v:
            return v
        # The run's own names and a client's ephemeral port differ from run to run.
        v = v.replace(prefix, "PREFIX-").replace(f"{k8s_ns(prefix)}/", "PREFIX/")
        return re.sub(r":(\d{5})\b", lambda m: ":EPHEMERAL" if int(m[1]) >= 32768 else m[0], v)

    return {
        "fields": sorted(event),
        "evidence": _shape(event["evidence"]),
        "rule": event["rule"],
        "explanation": text(event["explanation"]),
        "fix": text(event["fix"]),
    }


def _check_contract(name: str, got: dict[str, Any]) -> None:
    recorded = json.loads(CONTRACT.read_text()) if CONTRACT.exists() else {}
    if os.environ.get("DROPTRACE_RECORD_CONTRACT"):
        recorded[name] = got
        CONTRACT.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        return
    assert got == recorded[name]


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
        _check_contract(s.name, _contract(hits[0], prefix))
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
