#!/usr/bin/env bash
# Control plane: kubeadm init, Flannel, the join command for the workers, and the
# "outside" network namespace that plays a client/server beyond the cluster. Idempotent.
# Env (from the Vagrantfile): NODE_NAME NODE_IP LAB_NET POD_CIDR SERVICE_CIDR FLANNEL_VERSION
set -euo pipefail
: "${NODE_NAME:?}" "${NODE_IP:?}" "${LAB_NET:?}" "${POD_CIDR:?}" "${SERVICE_CIDR:?}" "${FLANNEL_VERSION:?}"
export KUBECONFIG=/etc/kubernetes/admin.conf
lab_dir=/vagrant/.lab   # the workers read join.sh from here (the Vagrantfile copies it over)

if [ ! -f /etc/kubernetes/admin.conf ]; then
  kubeadm init \
    --apiserver-advertise-address "$NODE_IP" \
    --node-name "$NODE_NAME" \
    --pod-network-cidr "$POD_CIDR" \
    --service-cidr "$SERVICE_CIDR"
fi

install -d -o vagrant -g vagrant /home/vagrant/.kube
install -m 0600 -o vagrant -g vagrant /etc/kubernetes/admin.conf /home/vagrant/.kube/config

# Flannel, with two changes to its stock manifest: our pod CIDR instead of 10.244.0.0/16,
# and the lab network for VXLAN (the default-route interface is the NAT, same on all nodes).
lab_prefix=$(echo "$LAB_NET" | cut -d. -f1-3 | sed 's/\./[.]/g')
manifest=$(mktemp)
trap 'rm -f "$manifest"' EXIT
curl -fsSL "https://github.com/flannel-io/flannel/releases/download/${FLANNEL_VERSION}/kube-flannel.yml" |
  sed -e "s#\"Network\": \"10.244.0.0/16\"#\"Network\": \"${POD_CIDR}\"#" \
      -e "s#^\([[:space:]]*\)- --kube-subnet-mgr\$#&\n\1- --iface-regex=^${lab_prefix}[.]#" >"$manifest"
if ! grep -q "\"Network\": \"${POD_CIDR}\"" "$manifest" || ! grep -q -- '--iface-regex=' "$manifest"; then
  echo "cp.sh: kube-flannel.yml ${FLANNEL_VERSION} changed shape; patch the pod CIDR/iface by hand" >&2
  exit 1
fi
kubectl apply -f "$manifest"
kubectl wait --for=condition=Ready "node/${NODE_NAME}" --timeout=300s

# A fresh join command on every provision (tokens expire after a week).
install -d -m 0700 "$lab_dir"
kubeadm token create --ttl 168h --print-join-command >"$lab_dir/join.sh.tmp"
mv "$lab_dir/join.sh.tmp" "$lab_dir/join.sh"
install -m 0600 /etc/kubernetes/admin.conf "$lab_dir/kubeconfig"

# lab-outside: a host on both lab networks that is not a node (the provider's router and
# "the internet" beyond it). ipvlan (L2) shares cp's NICs but not its IP stack, so cp's
# kube-proxy and iptables never see this traffic.
install -m 0755 /vagrant/provision/outside-netns.sh /usr/local/sbin/droptrace-lab-outside
# shellcheck source=/dev/null
. /etc/droptrace-lab.env # LAB_IFACE, PRIVATE_IFACE (written by common.sh)
cat >/etc/systemd/system/droptrace-lab-outside.service <<UNIT
[Unit]
Description=droptrace lab: the outside host (netns lab-outside, 192.0.2.20, 198.51.100.20)
After=network-online.target
Wants=network-online.target

[Service]
Environment=LAB_PARENT=${LAB_IFACE} PRIVATE_PARENT=${PRIVATE_IFACE}
ExecStartPre=/usr/local/sbin/droptrace-lab-outside up
ExecStart=/usr/local/sbin/droptrace-lab-outside serve
ExecStopPost=/usr/local/sbin/droptrace-lab-outside down
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable droptrace-lab-outside.service >/dev/null 2>&1
systemctl restart droptrace-lab-outside.service
echo "cp.sh: control plane ready; join command in ${lab_dir}/join.sh"
