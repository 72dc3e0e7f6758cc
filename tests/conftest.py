from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import (
    Droptrace,
    LabUp,
    lab_prefix,
    loaded_droptrace_programs,
    run_cli,
    sh,
    unique_name,
)

# The flight recorder pins under its own directory per test run, so concurrent runs (or a
# recorder a user left running) are never stopped by a test.
os.environ.setdefault("DROPTRACE_PIN_DIR", f"/sys/fs/bpf/droptrace-test-{os.getpid()}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root: run `make test` as root")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def netns() -> Iterator[Callable[[str], str]]:
    """Factory of fresh namespaces (lo up, IPv6 off to keep its start-up noise out).

    Every namespace is deleted afterwards, also when the test fails.
    """
    made: list[str] = []

    def make(tag: str = "ns") -> str:
        name = unique_name(tag)
        sh("ip", "netns", "add", name)
        made.append(name)
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=name)
        sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=name)
        sh("ip", "link", "set", "lo", "up", ns=name)
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(autouse=True)
def droptraces_of_this_test() -> Iterator[None]:
    """Droptrace.launched holds this test's droptrace processes only (for its report)."""
    Droptrace.launched.clear()
    yield


@pytest.fixture(autouse=True)
def nothing_left_loaded(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every root test must leave no droptrace program loaded behind."""
    if "root" not in request.keywords or os.geteuid() != 0:
        yield
        return
    before = len(loaded_droptrace_programs(settle=0))
    yield
    after = loaded_droptrace_programs(at_most=before)
    assert len(after) <= before, f"BPF programs left loaded: {after}"


@pytest.fixture
def lab_up() -> Iterator[LabUp]:
    """`droptrace lab up SCENARIO` under a fresh prefix; `lab down` afterwards, always."""
    prefixes: list[str] = []

    def up(name: str) -> str:
        prefix = lab_prefix()
        prefixes.append(prefix)
        res = run_cli("lab", "up", name, "--prefix", prefix)
        assert res.rc == 0, res.stderr
        return prefix

    try:
        yield up
    finally:
        for prefix in prefixes:
            run_cli("lab", "down", "--prefix", prefix)
