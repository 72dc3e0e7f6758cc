"""The report of `make test-kernels`: case x kernel -> outcome and category seen, each kernel's
droptrace start-up, and for anything that failed or ran out of time: which case, what
droptrace said, and the console's tail.

Usage: kernel_table.py RESULTS_DIR HOST_BUDGET GUEST_BUDGET KERNEL=SECONDS...
RESULTS_DIR/<kernel>/ holds what scripts/kernel-guest.sh wrote (results.jsonl, outcomes.jsonl,
droptrace.log, pytest.log, rc, phases; console.log for a guest) and selfcheck/, a run whose one
case must fail: its report must name the case and show droptrace's stderr. Exits 1 on any
failed, missing or unfinished case, failed run or failed self-check.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SELFCHECK_TEST = "test_udp_to_a_closed_port_is_no_socket"
TAIL = 15


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read(path: Path, default: str = "") -> str:
    return path.read_text(errors="replace").strip() if path.exists() else default


def short(test: str) -> str:
    return test.split("::", 1)[-1]


@dataclass
class Run:
    """What one kernel's run (or its self-check) left in its directory."""

    path: Path
    rc: str = ""
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # test -> results row
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)  # test -> outcome row
    started: list[str] = field(default_factory=list)  # tests in the order they started

    @classmethod
    def load(cls, path: Path) -> Run:
        run = cls(path, _read(path / "rc"))
        for row in _rows(path / "results.jsonl"):
            run.seen.setdefault(row["test"], row)
        for row in _rows(path / "outcomes.jsonl"):
            if row["outcome"] == "started":
                run.started.append(row["test"])
            elif row["test"] not in run.ended or row["outcome"].startswith("failed"):
                run.ended[row["test"]] = row  # a failed teardown outweighs a passed call
        return run

    @property
    def unfinished(self) -> str | None:
        """The case that was running when the run was stopped."""
        left = [t for t in self.started if t not in self.ended]
        return left[-1] if left else None

    def startups(self) -> list[float]:
        return [s for row in self.ended.values() for s in row.get("startup", [])]

    def droptrace_lines(self, test: str) -> list[str]:
        """What droptrace printed on stderr in this case, as it arrived."""
        log = self.path / "droptrace.log"
        if not log.exists():
            return []
        lines = log.read_text(errors="replace").splitlines()
        return [line.split("\t", 2)[2] for line in lines if line.startswith(test + "\t")]


def cell(run: Run, test: str) -> tuple[str, bool]:
    """(text, failed) of one case on one kernel."""
    row, seen = run.ended.get(test), run.seen.get(test, {})
    category = seen.get("seen", "")
    mark = "*" if seen.get("inferred") else ""
    if row is None:
        return ("TIMEOUT" if test == run.unfinished else "not run"), True
    outcome = row["outcome"]
    if outcome == "passed":
        return f"ok {category}{mark}", False
    if outcome == "xfailed":
        return f"known-wrong {category}{mark}", False
    if outcome.startswith("skipped"):
        return "skipped", False
    if outcome.startswith("failed in "):  # setup or teardown (e.g. a program left loaded)
        return f"FAILED {outcome.removeprefix('failed in ')}", True
    return f"FAILED {category}{mark}".rstrip(), True


def report(kernel: str, run: Run, console: Path | None) -> list[str]:
    """Each failed case with its message and what droptrace said; for a run stopped before
    its end, the case it was in, droptrace's output so far and the console's tail."""
    out = []
    for test, row in run.ended.items():
        if not row["outcome"].startswith("failed"):
            continue
        out.append(f"{kernel}: FAILED {short(test)}: {row.get('message', '')}")
        for d in row.get("droptrace", []):
            out.append(f"  droptrace {d['args']} said:")
            out += [f"    {line}" for line in d["stderr"].splitlines() or ["(nothing)"]]
    if run.unfinished:
        out.append(f"{kernel}: stopped (out of time) in {short(run.unfinished)}; droptrace said:")
        out += [f"    {line}" for line in run.droptrace_lines(run.unfinished) or ["(nothing)"]]
    if run.rc == "0" and not out and not run.unfinished:
        return out  # nothing went wrong
    tail = _read(run.path / "pytest.log").splitlines()[-TAIL:]
    out.append(f"{kernel}: pytest's last lines ({run.path / 'pytest.log'}):")
    out += [f"    {line}" for line in tail or ["(none)"]]
    if console is not None:
        tail = _read(console / "console.log").splitlines()[-TAIL:]
        out.append(f"{kernel}: console's last lines ({console / 'console.log'}):")
        out += [f"    {line}" for line in tail or ["(none)"]]
        out += [f"    guest: {line}" for line in _read(console / "guest.log").splitlines()]
    return out


def selfcheck(kernel: str, path: Path) -> str | None:
    """Why the report of a case failing on purpose is not what a user needs; None if it is."""
    run = Run.load(path)
    lines = report(kernel, run, None)
    text = "\n".join(lines)
    if not run.rc:
        return "the self-check run did not finish"
    if run.rc == "0":
        return "the case that must fail passed"
    if f"FAILED {SELFCHECK_TEST}" not in text:
        return f"the report does not name {SELFCHECK_TEST}"
    if "tracing with" not in text:
        return "the report does not show droptrace's stderr"
    return None


def _startup(run: Run) -> str:
    times = run.startups()
    if not times:
        return "droptrace start-up: none measured"
    return (
        f'droptrace start-up (launch to "tracing with"): median {statistics.median(times):.1f} s,'
        f" max {max(times):.1f} s over {len(times)} starts"
    )


def main(results: Path, budgets: tuple[str, str], timings: list[str]) -> int:
    kernels = [t.split("=", 1)[0] for t in timings]
    seconds = dict(t.split("=", 1) for t in timings)
    runs = {k: Run.load(results / k) for k in kernels}
    tests: list[str] = []
    for run in runs.values():
        tests += [t for t in run.started if t not in tests]
    label: dict[str, str] = {}
    for test in tests:
        row = next((r.seen[test] for r in runs.values() if test in r.seen), None)
        label[test] = f"{row['case']} ({row['expected']})" if row else short(test)

    failed = False
    width = max([len(v) for v in label.values()] + [20])
    col = max([len(k) for k in kernels] + [24])
    print()
    print(f"{'case (expected category)':<{width + 2}}" + "".join(f"{k:<{col}}" for k in kernels))
    for test in tests:
        cells = []
        for k in kernels:
            text, bad = cell(runs[k], test)
            failed |= bad
            cells.append(f"{text:<{col}}")
        print(f"{label[test]:<{width + 2}}" + "".join(cells))
    print("* the kernel gave no reason: droptrace's cause hooks or the drop location did")
    known: dict[str, list[str]] = {}  # why -> tests
    for run in runs.values():
        for t, r in run.ended.items():
            if r["outcome"] == "xfailed" and short(t) not in known.get(r.get("message", ""), []):
                known.setdefault(r.get("message", ""), []).append(short(t))
    for why, names in known.items():
        print(f"known-wrong {', '.join(names)}: {why}")
    print()
    problems: list[str] = []
    for k in kernels:
        run = runs[k]
        release = _read(results / k / "kernel", "?")
        hooks = next((r["hooks"] for r in run.seen.values() if r.get("hooks")), "?")
        rc = run.rc or "none (stopped before the end)"
        phases = ", ".join(_read(results / k / "phases").splitlines())
        budget = budgets[0] if k == "host" else budgets[1]
        print(f"{k}: {release}, {seconds[k]} s of {budget} s, pytest exit {rc}; hooks: {hooks}")
        print(f"    {_startup(run)}")
        print(f"    phases (seconds from start): {phases or '?'}")
        why = selfcheck(k, results / k / "selfcheck")
        ok = "a case failing on purpose was reported with its name and droptrace's stderr"
        print(f"    harness self-check: {ok if why is None else 'FAILED: ' + why}")
        failed |= run.rc != "0" or not run.started or why is not None
        guest = results / k if (results / k / "console.log").exists() else None
        problems += report(k, run, guest)
    if problems:
        print()
        print("\n".join(problems))
    print("kernel matrix: " + ("FAILED" if failed else "all cases as expected"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), (sys.argv[2], sys.argv[3]), sys.argv[4:]))
