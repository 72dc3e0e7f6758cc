"""`kubectl droptrace`: the pod's node and its agent found through the Kubernetes API (the
local API server of tests/kubeapi.py), and droptrace run in that agent with `kubectl exec`.

kubectl is a stand-in (tests/fake-kubectl.sh) that runs the exec'd command on this machine,
which is every node here; what it runs is the real droptrace, on the real kernel, watching
real packets of a real lab pod, which the API serves as that same pod."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Droptrace,
    LabUp,
    Result,
    k8s_ns,
    lab_pod_uid,
    send_udp,
    unique_name,
)
from tests.kubeapi import KubeApi, agent, pod, write_kubeconfig

STANDIN = Path(__file__).with_name("fake-kubectl.sh")
PLUGIN = str(Path(sys.executable).with_name("kubectl-droptrace"))


@dataclass
class Cluster:
    """A test's API server, and the environment of a kubectl-droptrace that talks to it."""

    api: KubeApi
    env: dict[str, str]
    calls: Path  # what the kubectl stand-in was asked, one call a line
    pids: Path  # the PIDs the remote commands ran as

    def run(self, *args: str, **env: str) -> Result:
        p = subprocess.run(
            [PLUGIN, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self.env, **env},
        )
        return Result(p.returncode, [], p.stderr, p.stdout)

    def start(self, *args: str) -> Droptrace:
        """The plugin in the background; ready once an agent's droptrace is tracing."""
        return Droptrace(*args, env=self.env, program=[PLUGIN])

    def exec_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def leftovers(self, settle: float = 5.0) -> list[str]:
        """Processes this cluster's plugin started that still run (its env marks them all)."""
        mark = f"DROPTRACE_TEST_MARK={self.env['DROPTRACE_TEST_MARK']}".encode()
        deadline = time.monotonic() + settle
        while True:
            left = []
            for environ in Path("/proc").glob("[0-9]*/environ"):
                try:
                    if mark in environ.read_bytes().split(b"\0"):
                        left.append((environ.parent / "cmdline").read_bytes().decode())
                except OSError:
                    continue  # gone meanwhile
            if not left or time.monotonic() > deadline:
                return [c.replace("\0", " ").strip() for c in left]
            time.sleep(0.1)


MakeCluster = Callable[..., Cluster]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """Factory: an API server with these pods, and kubectl on PATH as the stand-in.
    Every server is closed afterwards, also when the test fails."""
    made: list[KubeApi] = []

    def make(pods: list[dict[str, Any]], namespace: str | None = None) -> Cluster:
        api = KubeApi(pods, [])
        made.append(api)
        home = tmp_path / f"cluster{len(made)}"
        (home / "bin").mkdir(parents=True)
        (home / "bin" / "kubectl").symlink_to(STANDIN)
        env = {
            # The stand-in first; then this venv, where droptrace is (as in an agent).
            "PATH": f"{home / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "KUBECONFIG": str(api.kubeconfig(home / "kubeconfig", namespace)),
            "KUBECTL": "kubectl",  # the default, whatever the caller's environment says
            "FAKE_KUBECTL_LOG": str(home / "calls"),
            "FAKE_KUBECTL_PIDS": str(home / "pids"),
            "DROPTRACE_TEST_MARK": uuid.uuid4().hex,
        }
        return Cluster(api, env, home / "calls", home / "pids")

    try:
        yield make
    finally:
        for api in made:
            api.close()


def assert_one_line(res: Result, code: int, *parts: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.rc == code, res.stderr
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("kubectl-droptrace: "), lines
    for part in parts:
        assert part in lines[0], lines[0]
    assert res.stdout == ""


# --- argument handling: no kernel, no root -------------------------------------------


def test_no_pod_and_no_all_nodes_is_a_usage_error(cluster: MakeCluster) -> None:
    c = cluster([])
    assert_one_line(c.run(), 2, "give a POD", "--all-nodes")
    assert_one_line(c.run("--all-nodes", "-n", "shop"), 2, "-n/--namespace", "POD")
    assert_one_line(c.run("web", "--bogus"), 2, "--bogus", "--help")
    assert_one_line(c.run("web", "--count", "0"), 2, "--count")
    assert c.exec_calls() == []


def test_pod_namespace_defaults_to_default_then_the_contexts(
    cluster: MakeCluster, tmp_path: Path
) -> None:
    shop = unique_name("shop")
    pods = [
        pod("default", "web", "198.18.0.10", node="node-1"),
        pod(shop, "web", "198.18.0.11", node="node-1"),
        agent("droptrace-n1", "node-1", "192.0.2.1"),
    ]
    c = cluster(pods)
    dry = {"FAKE_KUBECTL_DRY": "1"}
    assert c.run("web", **dry).rc == 0
    assert c.run("web", "-n", shop, **dry).rc == 0
    in_shop = {"KUBECONFIG": str(c.api.kubeconfig(tmp_path / "shop-kubeconfig", shop))}
    assert c.run("web", **dry, **in_shop).rc == 0
    calls = c.exec_calls()
    prefix = "exec -i -n droptrace droptrace-n1 -c droptrace -- sh -c"
    assert all(call.startswith(prefix) for call in calls), calls
    assert [call.split(" droptrace --pod ", 1)[1] for call in calls] == [
        "web -n default",
        f"web -n {shop}",
        f"web -n {shop}",
    ]


def test_options_and_arguments_after_dashes_reach_droptrace(
    cluster: MakeCluster, tmp_path: Path
) -> None:
    c = cluster([pod("default", "web", "198.18.0.10", node="node-1")])
    c.api.event("pods", "ADDED", agent("droptrace-n1", "node-1", "192.0.2.1"))
    args = ("web", "--json", "--duration", "2.5", "--count", "5", "--", "--reason", "NO_SOCKET")
    res = c.run(*args, FAKE_KUBECTL_DRY="1")
    assert res.rc == 0, res.stderr
    assert "pod default/web is on node node-1: droptrace in agent droptrace-n1" in res.stderr
    (call,) = c.exec_calls()
    assert call.endswith(
        " droptrace --pod web -n default --json --duration 2.5 --count 5 --reason NO_SOCKET"
    )
    # --kubectl (and $KUBECTL) name another binary: here the stand-in, under another name.
    other = tmp_path / "my-kubectl"
    other.symlink_to(STANDIN)
    assert c.run("web", "--kubectl", str(other), FAKE_KUBECTL_DRY="1").rc == 0
    assert c.run("web", KUBECTL=str(other), FAKE_KUBECTL_DRY="1").rc == 0
    assert len(c.exec_calls()) == 3
    assert_one_line(c.run("web", "--kubectl", "no-such-kubectl"), 69, "no-such-kubectl")


def test_unknown_pod_is_one_line_with_the_closest_names(cluster: MakeCluster) -> None:
    shop = unique_name("shop")
    c = cluster(
        [
            pod(shop, "web-0", "198.18.0.10", node="node-1"),
            pod(shop, "web-1", "198.18.0.11", node="node-1"),
            pod(shop, "db-0", "198.18.0.12", node="node-1"),
            agent("droptrace-n1", "node-1", "192.0.2.1"),
        ]
    )
    res = c.run("wbe-0", "-n", shop)
    assert_one_line(res, 2, f"no pod 'wbe-0' in namespace {shop!r}", "did you mean web-0")
    assert "Traceback" not in res.stderr
    assert_one_line(c.run("web-0"), 2, "no pod 'web-0' in namespace 'default'", "no pods")
    assert c.exec_calls() == []


def test_no_api_is_one_line(cluster: MakeCluster, tmp_path: Path) -> None:
    c = cluster([])
    down = write_kubeconfig(tmp_path / "down", "http://127.0.0.1:9")  # nothing listens there
    res = c.run("web", KUBECONFIG=str(down))
    assert_one_line(res, 69, "Kubernetes API not reachable", "127.0.0.1:9 did not answer")
    res = c.run("--all-nodes", KUBECONFIG=str(tmp_path / "missing"))
    assert_one_line(res, 69, "Kubernetes API not reachable", "no kubeconfig")


def test_pod_on_a_node_without_an_agent_is_one_line(cluster: MakeCluster) -> None:
    c = cluster(
        [
            pod("default", "web", "198.18.0.10", node="node-2"),
            pod("default", "queued", "198.18.0.11", node=""),
            agent("droptrace-n1", "node-1", "192.0.2.1"),
            agent("droptrace-n3", "node-3", "192.0.2.3", phase="Pending"),
        ]
    )
    res = c.run("web")
    assert_one_line(res, 69, "no droptrace agent runs on node node-2", "`kubectl apply -k deploy/`")
    c.api.event("pods", "ADDED", pod("default", "db", "198.18.0.12", node="node-3"))
    assert_one_line(c.run("db"), 69, "agent on node node-3 is not running", "Pending")
    assert_one_line(c.run("queued"), 1, "pod default/queued is on no node yet")
    assert c.exec_calls() == []
    bare = cluster([pod("default", "web", "198.18.0.10", node="node-2")])
    res = bare.run("--all-nodes")
    assert_one_line(res, 69, "no droptrace agent runs in this cluster", "kubectl apply -k")
    starting = cluster([agent("droptrace-n1", "node-1", "192.0.2.1", phase="Pending")])
    res = starting.run("--all-nodes")
    assert_one_line(res, 69, "no droptrace agent is running", "droptrace-n1 is Pending")


def test_all_nodes_exits_non_zero_when_every_agent_fails(cluster: MakeCluster) -> None:
    c = cluster(
        [
            agent("droptrace-n1", "node-1", "192.0.2.1"),
            agent("droptrace-n2", "node-2", "192.0.2.2"),
            agent("droptrace-n3", "node-3", "192.0.2.3", phase="Pending"),
        ]
    )
    res = c.run("--all-nodes", FAKE_KUBECTL_BROKEN="droptrace-n1 droptrace-n2")
    assert res.rc == 1, res.stderr
    assert "kubectl-droptrace: node node-3: agent droptrace-n3 is Pending, skipped" in res.stderr
    for node in ("node-1", "node-2"):
        assert f"[{node}] error: unable to upgrade connection" in res.stderr
        assert f"kubectl-droptrace: node {node}: droptrace in agent droptrace-" in res.stderr
    assert len(c.exec_calls()) == 2


# --- streaming: the real droptrace on the real kernel -------------------------------

NODE, OTHER = "node-lab-1", "node-lab-2"


def lab_pods(prefix: str) -> list[dict[str, Any]]:
    """The no-route lab's two pods as the API serves them: pod-a on NODE (this machine),
    with the UID, name, namespace and address the node knows it by."""
    ns = k8s_ns(prefix)
    return [
        pod(ns, "pod-a", "198.18.1.2", uid=lab_pod_uid(prefix, "pod-a"), node=NODE),
        pod(ns, "pod-b", "198.18.2.2", uid=lab_pod_uid(prefix, "pod-b"), node=OTHER),
    ]


@pytest.mark.root
def test_kubectl_droptrace_shows_a_pods_drops_from_the_agent_on_its_node(
    lab_up: LabUp, cluster: MakeCluster
) -> None:
    prefix = lab_up("no-route")
    ns = k8s_ns(prefix)
    c = cluster([*lab_pods(prefix), agent("droptrace-abcde", NODE, "192.0.2.1")])
    with c.start("pod-a", "-n", ns, "--json", "--duration", "5") as plugin:
        send_udp(prefix + "pod-a", "198.18.1.1", 9)  # NO_SOCKET on node1: pod-a's
        send_udp(prefix + "pod-b", "198.18.2.1", 9)  # pod-b's, not shown
        res = plugin.wait()
    assert res.rc == 0, res.stderr
    assert f"pod {ns}/pod-a is on node {NODE}: droptrace in agent droptrace-abcde" in res.stderr
    # The agent's --pod: named by the API, placed on the node (its host veth) by the node.
    assert f"droptrace: pod {ns}/pod-a (198.18.1.2 via veth-pod-a)" in res.stderr
    # Only this lab's node1 counts: another lab on the machine may reuse pod-a's address.
    mine = [e for e in res.events if e["netns"] == prefix + "node1"]
    assert [e["reason"] for e in mine] == ["NO_SOCKET"] * 3, res.events
    assert all(e["src_pod"] == f"{ns}/pod-a" and "node" not in e for e in mine), mine
    assert "NO_SOCKET" in res.stderr.splitlines()[-1]  # the agent's summary, at its end
    (call,) = c.exec_calls()
    assert call.startswith("exec -i -n droptrace droptrace-abcde -c droptrace -- sh -c ")
    assert c.leftovers() == []


@pytest.mark.root
def test_all_nodes_merges_the_agents_with_the_node_on_each_drop(
    lab_up: LabUp, cluster: MakeCluster
) -> None:
    prefix = lab_up("no-route")
    ns = k8s_ns(prefix)
    agents = [agent("droptrace-one", NODE, "192.0.2.1"), agent("droptrace-two", OTHER, "192.0.2.2")]
    c = cluster([*lab_pods(prefix), *agents])
    c.env["FAKE_KUBECTL_BROKEN"] = "droptrace-two"  # its container went away
    args = ("--all-nodes", "--json", "--duration", "5", "--", "--netns", prefix + "node1")
    with c.start(*args) as plugin:
        send_udp(prefix + "pod-a", "198.18.1.1", 9)  # NO_SOCKET on node1
        send_udp(prefix + "pod-a", "198.18.2.2", 7)  # no route on node1
        res = plugin.wait()
    assert res.rc == 0, res.stderr  # one agent failed, the other went on
    assert all(e["node"] == NODE for e in res.events), res.events
    pod_a = [e for e in res.events if e["src"] == "198.18.1.2"]
    assert {e["reason"] for e in pod_a} == {"NO_SOCKET", "IP_INNOROUTES"}, res.events
    assert all(e["src_pod"] == f"{ns}/pod-a" for e in pod_a), pod_a
    assert f"droptrace on 2 nodes: {NODE}, {OTHER}" in res.stderr
    assert f"[{NODE}] droptrace: tracing with" in res.stderr
    assert f"[{OTHER}] error: unable to upgrade connection" in res.stderr
    assert f"kubectl-droptrace: node {OTHER}: droptrace in agent droptrace-two" in res.stderr
    assert c.leftovers() == []


@pytest.mark.root
def test_ctrl_c_stops_every_agents_droptrace_after_its_summary(
    lab_up: LabUp, cluster: MakeCluster
) -> None:
    prefix = lab_up("no-route")
    ns = k8s_ns(prefix)
    agents = [agent("droptrace-one", NODE, "192.0.2.1"), agent("droptrace-two", OTHER, "192.0.2.2")]
    c = cluster([*lab_pods(prefix), *agents])
    with c.start("pod-a", "-n", ns, "--all-nodes") as plugin:  # text; no --duration
        plugin.wait_for("tracing with", times=2)  # both agents
        send_udp(prefix + "pod-a", "198.18.1.1", 9, n=2)
        time.sleep(1.5)
        started = time.monotonic()
        plugin.interrupt()
        res = plugin.wait(timeout=30)
    assert res.rc == 0, res.stderr
    assert time.monotonic() - started < 10
    pids = [int(p) for p in c.pids.read_text().split()]
    assert len(pids) == 2
    for node in (NODE, OTHER):
        # Each agent's droptrace saw both drops (both run on this machine) and, stopped
        # through its stdin, printed its summary before it ended.
        drops = [x for x in res.stdout.splitlines() if x.startswith(f"[{node}] ")]
        assert sum("NO_SOCKET" in x and f"{ns}/pod-a" in x for x in drops) >= 2, res.stdout
        assert any(f"[{node}] summary: " in x for x in drops), res.stdout
    assert c.leftovers() == [], "processes of the plugin still running"
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_sigterm_is_a_ctrl_c(cluster: MakeCluster) -> None:
    """SIGTERM (kubectl's own stop, a CI timeout) ends the plugin as Ctrl-C does."""
    c = cluster([agent("droptrace-n1", "node-1", "192.0.2.1")])
    # The remote command is a sleep here: no kernel needed to see the stop reach it.
    fake = Path(c.env["PATH"].split(":")[0]) / "droptrace"
    fake.write_text("#!/bin/sh\necho 'droptrace: tracing with nothing' >&2\nexec sleep 60\n")
    fake.chmod(0o755)
    with c.start("--all-nodes") as plugin:
        plugin.proc.send_signal(signal.SIGTERM)
        res = plugin.wait(timeout=20)
    assert res.rc == 0, res.stderr
    assert c.leftovers() == []
