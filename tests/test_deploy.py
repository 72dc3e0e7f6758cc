"""deploy/: the node agent's manifests and dashboard, checked offline (no cluster).

The manifests validate against the Kubernetes schemas kubernetes-validate ships, and what the
agent, the kubectl plugin and Prometheus rely on is asserted: the node's namespaces, exactly
the capabilities the agent needs, read-only host mounts, the names the plugin looks up.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml

from tracer.enrich.pods_node import KUBELET_ROOT_ENV
from tracer.recorder import PIN_DIR
from tracer.system.netns import NETNS_DIRS
from tracer.system.preflight import BPFFS, TRACEFS, VMLINUX_BTF

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
# The oldest Kubernetes with securityContext.appArmorProfile, and the Vagrant lab's.
K8S_VERSIONS = ("1.30", "1.33")

# What the kubectl plugin looks up: agents are pods in this namespace with this label, and
# it runs `kubectl exec -n droptrace <agent> -c droptrace -- droptrace --pod P -n NS`.
NAMESPACE = "droptrace"
APP_LABEL = ("app.kubernetes.io/name", "droptrace")
CONTAINER = "droptrace"
PORT = 9750

CAPABILITIES = {
    "BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "SYSLOG", "SYS_RESOURCE",
}  # fmt: skip
READ_WRITE_HOST_PATHS = {str(BPFFS), "/run/droptrace"}  # recorder pins; nftrace state
METRICS = {
    "droptrace_drops_total",
    "droptrace_events_lost_total",
    "droptrace_hook_active",
    "droptrace_series_aggregated_total",
    "droptrace_kernel_drops_total",
    "droptrace_kernel_drops_untraced_total",
}
METRIC_LABELS = {"node", "reason", "category", "iface", "namespace", "pod", "hook", "counter"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomized() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _docs(DEPLOY / name)]


def _one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in _kustomized() if d["kind"] == kind]
    return found


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _one("DaemonSet")["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    (c,) = _pod_spec()["containers"]
    return dict(c)


def _host_mounts() -> dict[str, dict[str, Any]]:
    """host path -> its volumeMount in the agent's container."""
    volumes = {v["name"]: v for v in _pod_spec()["volumes"]}
    return {
        volumes[m["name"]]["hostPath"]["path"]: m
        for m in _container()["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    for doc in _kustomized():
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    ds = _one("DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_the_servicemonitor() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"servicemonitor.yaml"}  # it needs the operator's CRD


def test_agent_sees_the_node_network_and_processes_on_every_node() -> None:
    spec = _pod_spec()
    assert spec["hostNetwork"] is True
    assert spec["hostPID"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    # control plane, NotReady, unreachable: every taint is tolerated
    assert {"operator": "Exists"} in spec["tolerations"]


def test_agent_has_exactly_the_capabilities_it_needs_and_is_not_privileged() -> None:
    sc = _container()["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES
    assert len(sc["capabilities"]["add"]) == len(CAPABILITIES)
    assert sc.get("privileged", False) is False
    assert sc["readOnlyRootFilesystem"] is True
    assert "securityContext" not in _pod_spec() or not _pod_spec()["securityContext"].get(
        "privileged"
    )


def test_host_mounts_are_read_only_but_bpffs_and_the_trace_table_list() -> None:
    mounts = _host_mounts()
    needed = {
        str(VMLINUX_BTF.parent), str(TRACEFS), "/sys/fs/cgroup", str(NETNS_DIRS[0]),
        "/var/lib/kubelet/pods", str(BPFFS), "/run/droptrace",
    }  # fmt: skip
    assert needed <= set(mounts)
    for host_path, mount in mounts.items():
        assert mount["mountPath"] == host_path, "droptrace reads these paths as they are"
        writable = not mount.get("readOnly", False)
        assert writable == (host_path in READ_WRITE_HOST_PATHS), host_path
    assert PIN_DIR.is_relative_to(mounts[str(BPFFS)]["mountPath"])
    # Namespaces and kubelet's pod volumes are mounted after the agent starts.
    for late in (str(NETNS_DIRS[0]), "/var/lib/kubelet/pods"):
        assert mounts[late]["mountPropagation"] == "HostToContainer"


def test_kubelet_root_env_points_at_the_mounted_pod_directories() -> None:
    env = {e["name"]: e for e in _container()["env"]}
    root = env[KUBELET_ROOT_ENV]["value"]
    assert f"{root}/pods" in _host_mounts()


def test_names_the_kubectl_plugin_relies_on() -> None:
    for doc in _kustomized():
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
    assert _one("Namespace")["metadata"]["name"] == NAMESPACE
    ds = _one("DaemonSet")
    key, value = APP_LABEL
    assert ds["spec"]["selector"]["matchLabels"] == {key: value}
    assert ds["spec"]["template"]["metadata"]["labels"][key] == value
    assert _container()["name"] == CONTAINER


def test_agent_serves_on_the_node_address_and_is_probed_on_healthz() -> None:
    c = _container()
    args = c["args"]
    assert args[0] == "serve"
    assert args[args.index("--listen") + 1] == f"$(POD_IP):{PORT}"
    assert args[args.index("--node") + 1] == "$(NODE_NAME)"
    assert "--events" in args  # off by default in the CLI, on in the cluster
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert c["ports"] == [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert set(c["resources"]) == {"requests", "limits"}
    annotations = _one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_daemonset_image_is_the_one_make_image_builds() -> None:
    built = re.search(r"^IMAGE=\$\{IMAGE:-(\S+)\}$", (REPO / "scripts/image.sh").read_text(), re.M)
    assert built is not None
    assert _container()["image"] == built.group(1)


def test_cluster_role_reads_pods_and_services_and_writes_only_events() -> None:
    read, events = _one("ClusterRole")["rules"]
    assert read["apiGroups"] == [""]
    assert sorted(read["resources"]) == ["pods", "services"]
    assert sorted(read["verbs"]) == ["get", "list", "watch"]
    # serve --events: create an Event, then patch its count; nothing else.
    assert events == {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}
    for rule in (read, events):
        assert set(rule) == {"apiGroups", "resources", "verbs"}
    binding = _one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == _one("ClusterRole")["metadata"]["name"]
    sa = _one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    ]
    assert _pod_spec()["serviceAccountName"] == sa["name"]


def test_service_monitor_scrapes_every_agent_on_the_metrics_port() -> None:
    (sm,) = _docs(DEPLOY / "servicemonitor.yaml")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["kind"] == "ServiceMonitor"
    svc = _one("Service")
    assert svc["spec"]["clusterIP"] == "None"
    pod_labels = _one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    (endpoint,) = sm["spec"]["endpoints"]
    (port,) = svc["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    assert port["port"] == PORT
    assert port["targetPort"] == _container()["ports"][0]["name"]
    # The dropped packet's namespace/pod labels survive the target's own (the agent's).
    targets = {r.get("targetLabel") for r in endpoint["metricRelabelings"]}
    assert {"namespace", "pod"} <= targets


def _queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL query of the dashboard, Grafana's $variables replaced by a regex."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            # label_values(METRIC, LABEL) is Grafana's: check it as the selector it queries.
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert m, query
            exprs.append(f"count by ({m.group(2)}) ({m.group(1)})")
    return [re.sub(r"\$\{?\w+\}?", ".*", e) for e in exprs]


def _metrics_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and label names a query uses (ValueError if it does not parse)."""
    metrics: set[str] = set()
    labels: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers
            metrics.update(m.value for m in matchers if m.name == "__name__")
            if node.name:
                metrics.add(node.name)
            labels.update(m.name for m in matchers if m.name != "__name__")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return metrics, labels


def test_dashboard_queries_only_the_agents_metrics_through_its_datasource_variable() -> None:
    dashboard = json.loads((DEPLOY / "grafana/droptrace-dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))
            assert legend_labels <= METRIC_LABELS, target["legendFormat"]
    used: set[str] = set()
    for expr in _queries(dashboard):
        metrics, labels = _metrics_and_labels(expr)
        assert metrics, f"no metric in {expr!r}"
        assert metrics <= METRICS, f"{expr!r} uses {metrics - METRICS}"
        assert labels <= METRIC_LABELS, f"{expr!r} uses labels {labels - METRIC_LABELS}"
        used |= metrics
    assert used == METRICS
    exprs = " ".join(_queries(dashboard))
    assert "rate(droptrace_drops_total{" in exprs
    assert "[5m])" in exprs
    assert "topk(" in exprs
