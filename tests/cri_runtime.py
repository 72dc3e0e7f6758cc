"""A real containerd with its CRI plugin, for the tests of the CRI identity source.

It has its own root, state, socket and runc root under a temporary directory, its own CNI
network (the bridge and host-local plugins, on a 198.19.x.0/24 test range with no default
route) and its own pause image: busybox from this host's busybox-static, built with
buildah, so no registry is needed. Pods are run the way kubelet runs them, through the
CRI's RunPodSandbox, but under a cgroup of their own rather than kubepods, so the only
source that can name them is the runtime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path

from tracer.enrich import pods_cri

PAUSE_IMAGE = "localhost/droptrace-test-pause:1"
CNI_BIN = Path("/usr/lib/cni")
# Made outside the configured roots: containerd's shim sockets, libcni's cache, and
# buildah's blob-info cache (which has no option to move it).
HOST_DIRS = (Path("/run/containerd"), Path("/var/lib/cni"), Path("/var/lib/containers"))


@dataclass(frozen=True)
class Sandbox:
    id: str
    namespace: str
    name: str
    uid: str
    ip: str
    netns: str  # its name under /var/run/netns, for `ip netns exec`

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


class CriRuntime:
    def __init__(self, root: Path, tag: str, subnet: str) -> None:
        self.root = root
        self.tag = tag
        self.subnet = subnet
        self.socket = root / "containerd.sock"
        self.bridge = f"dtc{tag}"[:15]
        self.cgroup_parent = f"/droptrace-test-{tag}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._host_dirs_before = {d: d.exists() for d in HOST_DIRS}
        self._stub = None
        self._netns: list[str] = []  # of the sandboxes run, in case one outlives its removal

    def _pause_image(self) -> Path:
        archive = self.root / "pause.tar"
        store = ["--root", str(self.root / "bstore"), "--runroot", str(self.root / "brun")]
        buildah = ["buildah", *store, "--storage-driver", "vfs"]

        def run(*args: str) -> str:
            return subprocess.run(
                [*buildah, *args], check=True, capture_output=True, text=True
            ).stdout.strip()

        ctr = run("from", "scratch")
        mnt = Path(run("mount", ctr))
        shutil.copy("/bin/busybox", mnt / "busybox")
        # Like Kubernetes' pause: a process that only holds the pod's namespaces.
        run("config", "--entrypoint", '["/busybox","sleep","2147483647"]', ctr)
        run("commit", "-q", ctr, f"oci-archive:{archive}:{PAUSE_IMAGE}")
        run("rm", ctr)
        return archive

    def _config(self) -> Path:
        cni = self.root / "cni"
        cni.mkdir()
        (cni / "10-droptrace-test.conflist").write_text(
            f"""{{"cniVersion": "0.4.0", "name": "dt{self.tag}", "plugins": [
  {{"type": "bridge", "bridge": "{self.bridge}", "ipMasq": false,
   "ipam": {{"type": "host-local", "subnet": "{self.subnet}",
             "dataDir": "{self.root / "ipam"}"}}}},
  {{"type": "loopback"}}]}}
"""
        )
        r = self.root
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = r / "config.toml"
        config.write_text(
            f"""version = 2
root = "{r / "root"}"
state = "{r / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{r / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # Lowering oom_score_adj (kubelet's -998 for a sandbox) is not allowed on every test host.
  restrict_oom_score_adj = true
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
  [{cri}.containerd]
    snapshotter = "native"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        Root = "{r / "runc"}"
"""
        )
        return config

    def start(self) -> None:
        archive = self._pause_image()
        config = self._config()
        log = (self.root / "containerd.log").open("wb")
        self._proc = subprocess.Popen(
            ["containerd", "--config", str(config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while not self.socket.is_socket():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {self.log()[-2000:]}")
            time.sleep(0.1)
        subprocess.run(
            ["ctr", "-a", str(self.socket), "-n", "k8s.io", "images", "import", str(archive)],
            check=True,
            capture_output=True,
        )

    def log(self) -> str:
        return (self.root / "containerd.log").read_text(errors="replace")

    def _rt(self):  # type: ignore[no-untyped-def]
        a = pods_cri.api()
        if self._stub is None:
            channel = a.grpc.insecure_channel(f"unix://{self.socket}")
            self._stub = a.services.RuntimeServiceStub(channel)
        return a.pb, self._stub

    def run_pod(self, namespace: str, name: str) -> Sandbox:
        """RunPodSandbox as kubelet calls it; returns the sandbox with its IP and netns."""
        pb, rt = self._rt()
        uid = str(uuid.uuid4())
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace),
            hostname=name,
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{self.cgroup_parent}/pod{uid}"),
        )
        sid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
        resp = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True))
        path = pods_cri.netns_path_of(resp.info["info"])
        assert path is not None and path.parent == Path("/var/run/netns"), resp.info
        ip = resp.status.network.ip
        assert ip_address(ip) in ip_network(self.subnet), ip
        self._netns.append(path.name)
        return Sandbox(sid, namespace, name, uid, ip, path.name)

    def remove_pod(self, sandbox: Sandbox) -> None:
        pb, rt = self._rt()
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)

    def stop(self) -> None:
        """Every sandbox removed, containerd stopped, and nothing of it left on the host,
        also when something failed on the way."""
        if self._proc is not None and self._proc.poll() is None:
            items = []
            with contextlib.suppress(Exception):
                pb, rt = self._rt()
                items = list(rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items)
            for item in items:
                with contextlib.suppress(Exception):
                    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=item.id), timeout=60)
                with contextlib.suppress(Exception):
                    rt.RemovePodSandbox(
                        pb.RemovePodSandboxRequest(pod_sandbox_id=item.id), timeout=60
                    )
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        # What a failed removal left: processes in the test's cgroups, pinned namespaces.
        tops = self._cgroup_tops()
        for top in tops:
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
        for netns in self._netns:
            if Path(f"/var/run/netns/{netns}").exists():
                subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        deadline = time.monotonic() + 5
        for top in tops:  # deepest first; a cgroup whose processes are exiting is busy a moment
            for d in sorted([*top.rglob("*"), top], key=lambda p: -len(p.parts)):
                while d.is_dir():
                    try:
                        d.rmdir()
                    except OSError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
        for d, existed in self._host_dirs_before.items():
            if not existed:
                shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)  # images, containerd's root and state

    def _cgroup_tops(self) -> list[Path]:
        """The test's cgroup in every hierarchy: cgroup v2's one tree or each v1 controller's."""
        base = Path("/sys/fs/cgroup")
        rel = self.cgroup_parent.lstrip("/")
        found = [base / rel, *(h / rel for h in base.iterdir() if h.is_dir())]
        return [d for d in found if d.is_dir()]
