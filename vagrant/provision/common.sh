#!/usr/bin/env bash
# Every lab node: containerd, kubeadm/kubelet/kubectl from the Kubernetes apt repository,
# the kernel modules and sysctls kubeadm expects, and /etc/droptrace-lab.env (node facts
# that scenario.sh expands when it runs a scenario's fault.sh here). Idempotent.
# Env (from the Vagrantfile): NODE_NAME NODE_IP LAB_NET PRIVATE_IP PRIVATE_NET POD_CIDR
# SERVICE_CIDR K8S_MINOR
set -euo pipefail
: "${NODE_NAME:?}" "${NODE_IP:?}" "${LAB_NET:?}" "${PRIVATE_IP:?}" "${PRIVATE_NET:?}"
: "${POD_CIDR:?}" "${SERVICE_CIDR:?}" "${K8S_MINOR:?}"
: "${K8S_APT:?set DROPTRACE_K8S_APT to the Kubernetes apt repository URL for ${K8S_MINOR} (kubeadm install guide)}"
export DEBIAN_FRONTEND=noninteractive

# kubelet refuses to start with swap on.
swapoff -a
sed -i -E '/^[^#].*[[:space:]]swap[[:space:]]/s/^/#/' /etc/fstab

# br_netfilter makes bridged pod-to-pod traffic visible to iptables (kube-proxy's DNAT
# replies); the bridge-nf-hairpin scenario turns exactly this off.
cat >/etc/modules-load.d/kubernetes.conf <<'MODS'
overlay
br_netfilter
MODS
modprobe overlay
modprobe br_netfilter
cat >/etc/sysctl.d/90-kubernetes.conf <<'SYSCTL'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
SYSCTL
sysctl --system >/dev/null

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  ca-certificates curl gpg rsync containerd conntrack iptables socat ethtool \
  iproute2 python3 >/dev/null

# Kubernetes packages come from the project's apt repository (one minor version each).
install -d -m 0755 /etc/apt/keyrings
curl -fsSL "${K8S_APT%/}/Release.key" |
  gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] ${K8S_APT%/}/ /" \
  >/etc/apt/sources.list.d/kubernetes.list
apt-get update -qq
apt-get install -y -qq --no-install-recommends kubelet kubeadm kubectl kubernetes-cni cri-tools >/dev/null
apt-mark hold kubelet kubeadm kubectl >/dev/null

# containerd (Debian's 1.6): systemd cgroups like the kubelet, and the pause image
# this kubeadm version expects (kubeadm warns and may re-pull otherwise).
install -d /etc/containerd
if [ ! -f /etc/containerd/config.toml ] || ! grep -q 'SystemdCgroup = true' /etc/containerd/config.toml; then
  containerd config default >/etc/containerd/config.toml
  sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
fi
pause_image=$(kubeadm config images list --kubernetes-version "$(kubeadm version -o short)" 2>/dev/null | grep /pause: || true)
if [ -n "$pause_image" ]; then
  sed -i "s#sandbox_image = .*#sandbox_image = \"${pause_image}\"#" /etc/containerd/config.toml
fi
systemctl restart containerd
cat >/etc/crictl.yaml <<'CRICTL'
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
CRICTL

# The kubelet would otherwise advertise the NAT address (same on every node).
echo "KUBELET_EXTRA_ARGS=--node-ip=${NODE_IP}" >/etc/default/kubelet
systemctl enable kubelet >/dev/null 2>&1

# The NIC that carries an address (Vagrant names them eth1/eth2 on Debian boxes, but the
# scenarios never assume it).
iface_of() {
  local name
  name=$(ip -o -4 addr show | awk -v ip="$1" 'index($4, ip "/") == 1 { print $2; exit }')
  if [ -z "$name" ]; then
    echo "common.sh: no interface carries $1; are the private networks up?" >&2
    exit 1
  fi
  echo "$name"
}
lab_iface=$(iface_of "$NODE_IP")
private_iface=$(iface_of "$PRIVATE_IP")

# Node facts for scenario.sh (values it may reference as \$NAME in fault env vars).
cat >/etc/droptrace-lab.env <<ENV
NODE_NAME=${NODE_NAME}
NODE_IP=${NODE_IP}
LAB_NET=${LAB_NET}
LAB_IFACE=${lab_iface}
PRIVATE_IP=${PRIVATE_IP}
PRIVATE_NET=${PRIVATE_NET}
PRIVATE_IFACE=${private_iface}
POD_IFACE=cni0
TUNNEL_IFACE=flannel.1
CLUSTER_POD_CIDR=${POD_CIDR}
SERVICE_CIDR=${SERVICE_CIDR}
ENV
chmod 0644 /etc/droptrace-lab.env
echo "common.sh: ${NODE_NAME} ready for kubeadm (lab ${lab_iface}, private ${private_iface})"
