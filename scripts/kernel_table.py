"""The table of `make test-kernels`: case x kernel -> category seen, and the exit status.

Usage: kernel_table.py RESULTS_DIR KERNEL=SECONDS... ; RESULTS_DIR/<kernel>/ holds what
scripts/kernel-guest.sh wrote (results.jsonl, rc, pytest.log). Exits 1 on any mismatch,
missing case or failed guest run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(results: Path, timings: list[str]) -> int:
    kernels = [t.split("=", 1)[0] for t in timings]
    seconds = dict(t.split("=", 1) for t in timings)
    rows: dict[str, dict[str, dict[str, str]]] = {}  # case -> kernel -> row
    expected: dict[str, str] = {}
    info: dict[str, tuple[str, str, str]] = {}  # kernel -> (release, hooks, pytest rc)
    for k in kernels:
        d = results / k
        lines = (
            (d / "results.jsonl").read_text().splitlines() if (d / "results.jsonl").exists() else []
        )
        hooks = ""
        for line in lines:
            row = json.loads(line)
            rows.setdefault(row["case"], {})[k] = row
            expected[row["case"]] = row["expected"]
            hooks = hooks or row["hooks"]
        rc = (
            (d / "rc").read_text().strip() if (d / "rc").exists() else "none (guest did not finish)"
        )
        release = (d / "kernel").read_text().strip() if (d / "kernel").exists() else "?"
        info[k] = (release, hooks, rc)

    failed = False
    width = max([len(c) for c in rows] + [20])
    col = max([len(k) for k in kernels] + [24])
    print()
    print(f"{'case (expected)':<{width + 25}}" + "".join(f"{k:<{col}}" for k in kernels))
    for case, by_kernel in rows.items():
        cells = []
        for k in kernels:
            row = by_kernel.get(k)
            if row is None:
                cell, failed = "MISSING", True
            elif row["seen"] == row["expected"]:
                cell = f"ok {row['seen']}" + ("*" if row.get("inferred") else "")
            else:
                cell, failed = f"MISMATCH {row['seen']}", True
            cells.append(f"{cell:<{col}}")
        print(f"{case:<{width}}  {'(' + expected[case] + ')':<23}" + "".join(cells))
    print("* the kernel gave no reason: droptrace's cause hooks or the drop location did\n")
    for k in kernels:
        release, hooks, rc = info[k]
        print(f"{k}: {release}, {seconds[k]} s, pytest exit {rc}; hooks: {hooks or '?'}")
        failed |= rc != "0" or not any(k in r for r in rows.values())
    print("kernel matrix: " + ("FAILED" if failed else "all cases diagnosed as expected"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
