"""What the kernel matrix reports about each case, as it happens.

With DROPTRACE_MATRIX_OUT set (scripts/kernel-guest.sh), every case leaves one line in
outcomes.jsonl beside it when it starts and one when it ends: outcome, seconds, droptrace's
start-up times, and for a failure the message and what each droptrace said. A failure is also
printed at once, with its traceback, so a run cut short still shows it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Droptrace

_OUT = os.environ.get("DROPTRACE_MATRIX_OUT")


def _write(row: dict[str, Any]) -> None:
    if _OUT:
        with open(Path(_OUT).with_name("outcomes.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


def pytest_runtest_logstart(nodeid: str) -> None:
    _write({"test": nodeid, "outcome": "started", "time": time.time()})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" and not report.failed and not report.skipped:
        return
    said = [
        {"args": " ".join(str(a) for a in d.proc.args[3:]), "stderr": d.stderr}
        for d in Droptrace.launched
    ]
    # A known-wrong case (xfail) shows as skipped with `wasxfail`; a strict one that passes
    # is a failure ("[XPASS(strict)]"): its marker must then go.
    result = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    row: dict[str, Any] = {
        "test": report.nodeid,
        "outcome": result if report.when == "call" else f"{result} in {report.when}",
        "seconds": round(report.duration, 1),
        "startup": [round(d.startup, 1) for d in Droptrace.launched if d.startup is not None],
    }
    if not report.passed:
        row["message"] = _message(report)
        row["droptrace"] = said
    _write(row)
    if report.failed:
        _print_now(item, report, said)


def _message(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail") and not report.failed:
        return str(report.wasxfail)
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(longrepr)


def _print_now(item: pytest.Item, report: pytest.TestReport, said: list[dict[str, str]]) -> None:
    """The failure now, not only in the summary at the end (a run may be cut short)."""
    tr = item.config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    tr.write_line("")
    tr.write_sep("!", f"FAILED {report.nodeid} ({report.when})")
    tr.write_line(report.longreprtext)
    for d in said:
        tr.write_line(f"--- droptrace {d['args']} said:")
        tr.write_line(d["stderr"].rstrip() or "(nothing)")
