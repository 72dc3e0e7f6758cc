"""Pods named by the node's CRI runtime: a real containerd runs real pod sandboxes (CNI
bridge, pinned network namespaces); with no API server and no kubelet directories, only the
runtime's socket can say which pod an address is."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cri_runtime import CriRuntime, Sandbox
from tests.helpers import Droptrace, run_cli, send_udp, unique_name

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def cri() -> Iterator[tuple[CriRuntime, dict[str, Sandbox]]]:
    tag = unique_name("")[-6:]
    subnet = f"198.19.{100 + os.getpid() % 150}.0/24"  # test range, apart from the lab's
    runtime = CriRuntime(Path(tempfile.mkdtemp(prefix="droptrace-cri-")), tag, subnet)
    try:
        runtime.start()
        pods = {
            "web": runtime.run_pod("shop", f"web-{tag}"),
            "client": runtime.run_pod("ops", f"client-{tag}"),
            "other": runtime.run_pod("shop", f"other-{tag}"),
        }
        yield runtime, pods
    finally:
        runtime.stop()


def _env(runtime: CriRuntime, kubelet_root: Path) -> dict[str, str]:
    return {
        "KUBECONFIG": "/nonexistent/kubeconfig",  # no API server
        "DROPTRACE_KUBELET_ROOT": str(kubelet_root),  # an empty kubelet root: nothing there
        "DROPTRACE_CRI_SOCKET": str(runtime.socket),
    }


def test_runtime_names_both_ends_and_pod_scopes_the_trace(
    cri: tuple[CriRuntime, dict[str, Sandbox]], tmp_path: Path
) -> None:
    runtime, pods = cri
    web, client, other = pods["web"], pods["client"], pods["other"]
    args = ("--json", "--pod", web.name, "-n", "shop", "--duration", "6")
    with Droptrace(*args, env=_env(runtime, tmp_path)) as dt:
        send_udp(client.netns, web.ip, 9)  # NO_SOCKET in web's namespace: client -> web
        send_udp(client.netns, other.ip, 9)  # the same drop, at another pod: not shown
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert "naming pods from the CRI runtime" in res.stderr, res.stderr
    assert f"pod shop/{web.name} ({web.ip}" in res.stderr, res.stderr
    drops = [e for e in res.events if e["reason"] == "NO_SOCKET"]
    assert len(drops) == 3, res.events
    for e in drops:
        assert e["src_pod"] == client.ref and e["dst_pod"] == web.ref, e
        assert e["dst"] == web.ip, e
    # The node-side end of web's veth on the CNI bridge, as `ip link` shows it.
    host_if = drops[0]["evidence"]["dst_pod_host_iface"]
    assert host_if and host_if.startswith("veth"), drops[0]["evidence"]
    master = Path(f"/sys/class/net/{host_if}/master").resolve().name
    assert master == runtime.bridge
    assert all(e["dst"] != other.ip for e in res.events), res.events
    # The kernel's exact totals count web's 3 drops only: the filter is in the kernel.
    assert "NO_SOCKET 3" in res.stderr, res.stderr


def test_a_removed_pods_address_is_not_named_after_it(
    cri: tuple[CriRuntime, dict[str, Sandbox]], tmp_path: Path
) -> None:
    runtime, pods = cri
    client = pods["client"]
    gone = runtime.run_pod("shop", f"gone-{runtime.tag}")
    with Droptrace("--json", "--ip", f"{gone.ip}/32", "--duration", "6",
                   env=_env(runtime, tmp_path)) as dt:  # fmt: skip
        send_udp(client.netns, gone.ip, 9, n=1)  # NO_SOCKET in gone's namespace
        time.sleep(1.5)  # explained (names are looked up as drops come) before it goes
        runtime.remove_pod(gone)
        send_udp(client.netns, gone.ip, 10, n=1)  # no pod has that address any more
        res = dt.wait()
    assert res.rc == 0, res.stderr
    by_port = {e["dport"]: e for e in res.events}
    assert by_port[9]["dst_pod"] == gone.ref, res.events
    assert by_port[9]["src_pod"] == client.ref
    assert 10 not in by_port or by_port[10]["dst_pod"] is None, res.events


def test_without_the_runtime_its_pods_are_unknown_in_one_line(
    cri: tuple[CriRuntime, dict[str, Sandbox]], tmp_path: Path
) -> None:
    runtime, pods = cri
    env = dict(_env(runtime, tmp_path), DROPTRACE_CRI_SOCKET=str(tmp_path / "no.sock"))
    res = run_cli("--pod", pods["web"].name, "-n", "shop", env=env)
    assert res.rc == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"no pod '{pods['web'].name}'" in lines[0] and "no CRI runtime" in lines[0], lines


def test_a_runtime_that_does_not_answer_is_one_note_not_an_error(tmp_path: Path) -> None:
    sock = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))  # a socket nobody accepts on: the runtime is down
    try:
        env = {"KUBECONFIG": "/nonexistent/kubeconfig", "DROPTRACE_CRI_SOCKET": str(sock)}
        with Droptrace("--json", "--duration", "1", env=env) as dt:
            res = dt.wait()
    finally:
        s.close()
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert res.rc == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "no CRI runtime" in line]
    assert len(notes) == 1 and str(sock) in notes[0], res.stderr
