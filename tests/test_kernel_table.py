"""The kernel matrix's report (scripts/kernel_table.py): a case that fails or hangs inside a
guest is named, with what droptrace said, never left as a bare timeout. No root, no guest:
each guest run of `make test-kernels` checks the same report on a case failing on purpose."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CASE = "tests/matrix/test_kernel_cases.py::test_udp_to_a_closed_port_is_no_socket"
HUNG = "tests/matrix/test_kernel_cases.py::test_forwarding_off_is_forwarding_disabled"


@pytest.fixture(scope="module")
def table() -> ModuleType:
    path = Path(__file__).parents[1] / "scripts" / "kernel_table.py"
    spec = importlib.util.spec_from_file_location("kernel_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernel_table"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def write(path: Path, name: str, rows: list[dict[str, Any]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def failed_run(path: Path) -> None:
    said = "droptrace: tracing with tp_btf/kfree_skb\ndroptrace: 2 drops in 0.3s (NO_SOCKET 2)\n"
    write(path, "results.jsonl", [{"test": CASE, "case": "udp_closed_port",
                                   "expected": "impossible", "seen": "no_socket"}])  # fmt: skip
    write(path, "outcomes.jsonl", [
        {"test": CASE, "outcome": "started"},
        {"test": CASE, "outcome": "failed", "seconds": 9.0, "startup": [7.1],
         "message": "AssertionError: {'category': 'no_socket'}",
         "droptrace": [{"args": "--json --netns m-udp", "stderr": said}]},
    ])  # fmt: skip
    (path / "rc").write_text("1\n")


def test_a_case_failing_in_a_guest_is_reported_with_its_name_and_droptraces_stderr(
    table: ModuleType, tmp_path: Path
) -> None:
    failed_run(tmp_path)
    run = table.Run.load(tmp_path)
    text = "\n".join(table.report("5.10", run, None))
    assert "5.10: FAILED test_udp_to_a_closed_port_is_no_socket: AssertionError" in text
    assert "    droptrace: tracing with tp_btf/kfree_skb" in text
    assert table.cell(run, CASE) == ("FAILED no_socket", True)
    assert table.selfcheck("5.10", tmp_path) is None  # what every guest run checks


def test_a_case_still_running_when_time_ran_out_is_named_with_droptraces_output_so_far(
    table: ModuleType, tmp_path: Path
) -> None:
    write(tmp_path, "outcomes.jsonl", [
        {"test": CASE, "outcome": "started"},
        {"test": CASE, "outcome": "passed", "seconds": 9.0, "startup": [7.1]},
        {"test": HUNG, "outcome": "started"},
    ])  # fmt: skip
    (tmp_path / "droptrace.log").write_text(
        f"{CASE}\t7.1\tdroptrace: tracing with tp_btf/kfree_skb\n"
        f"{HUNG}\t3.0\tdroptrace: this kernel's kfree_skb has no drop reasons\n"
    )
    (tmp_path / "pytest.log").write_text("test_forwarding_off_is_forwarding_disabled ")
    (tmp_path / "console.log").write_text("[  900.1] reboot: Power down\n")
    run = table.Run.load(tmp_path)
    text = "\n".join(table.report("5.10", run, tmp_path))
    assert "stopped (out of time) in test_forwarding_off_is_forwarding_disabled" in text
    assert "    droptrace: this kernel's kfree_skb has no drop reasons" in text
    assert "tracing with" not in text  # the other case's output is not mixed in
    assert "    [  900.1] reboot: Power down" in text  # the console's tail
    assert table.cell(run, HUNG) == ("TIMEOUT", True)
    assert table.selfcheck("5.10", tmp_path) == "the self-check run did not finish"


def test_a_case_that_must_fail_but_passes_fails_the_self_check(
    table: ModuleType, tmp_path: Path
) -> None:
    write(tmp_path, "outcomes.jsonl", [{"test": CASE, "outcome": "passed", "seconds": 1.0}])
    (tmp_path / "rc").write_text("0\n")
    assert table.selfcheck("5.10", tmp_path) == "the case that must fail passed"
