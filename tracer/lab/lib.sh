#!/usr/bin/env bash
# Helpers for the netns lab's topology.sh and traffic.sh (not for fault.sh, which must run
# on a real node too). Every namespace is "${LAB_PREFIX}<role>".
: "${LAB_PREFIX:?LAB_PREFIX must be set, e.g. dtlab-}"

ns() { printf '%s%s' "$LAB_PREFIX" "$1"; }
in_ns() { local role=$1; shift; ip netns exec "$(ns "$role")" "$@"; }

# mkns ROLE: a namespace with lo up and IPv6 off (its start-up drops are noise here).
mkns() {
  ip netns add "$(ns "$1")"
  in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  in_ns "$1" ip link set lo up
}

# veth ROLE_A IF_A ROLE_B IF_B: a cable between two namespaces, both ends up.
veth() {
  ip link add "$2" netns "$(ns "$1")" type veth peer name "$4" netns "$(ns "$3")"
  in_ns "$1" ip link set "$2" up
  in_ns "$3" ip link set "$4" up
}

# bridge ROLE NAME CIDR: a bridge with the node's address on it (a CNI's cni0), up.
bridge() {
  in_ns "$1" ip link add "$2" type bridge
  in_ns "$1" ip addr add "$3" dev "$2"
  in_ns "$1" ip link set "$2" up
}

# serve ROLE PORT: a TCP listener in ROLE for at most 10 minutes (`lab down` kills it sooner).
serve() {
  in_ns "$1" timeout 600 python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept(); c.close()' "$2" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 50); do
    in_ns "$1" ss -Hltn "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  echo "serve: nothing listens on port $2 in $(ns "$1")" >&2
  return 1
}

# tcp_try ROLE HOST PORT [TRIES]: bounded TCP connects; prints ok/failed, never fails.
tcp_try() {
  in_ns "$1" python3 -c 'import socket, sys
ok = 0
for _ in range(int(sys.argv[3])):
    s = socket.socket(); s.settimeout(1.5)
    try:
        s.connect((sys.argv[1], int(sys.argv[2]))); ok += 1
    except OSError:
        pass
    s.close()
print("tcp %s:%s %d/%s connected" % (sys.argv[1], sys.argv[2], ok, sys.argv[3]))' "$2" "$3" "${4:-2}" || true
}

# udp_send ROLE HOST PORT [COUNT]: a few datagrams, no answer awaited.
udp_send() {
  in_ns "$1" python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(b"droptrace-lab", (sys.argv[1], int(sys.argv[2])))' "$2" "$3" "${4:-3}" || true
}

# Pods the node can name without an API server, laid out as kubelet lays them out: the
# kubelet directory is never a real kubelet's; the default one is registered among
# droptrace's extra kubelet roots (tracer/enrich/pods_node.py, tracer/lab/labpods.py).
LAB_KUBELET_ROOT=${DROPTRACE_KUBELET_ROOT:-/run/droptrace-lab/kubelet}
LAB_KUBELET_LINK=/run/droptrace/kubelet-roots/droptrace-lab
# The lab's Kubernetes namespace: the prefix without its dash (dtlab-, by default: dtlab).
lab_k8s_ns() { printf '%s' "${LAB_PREFIX%-}"; }

# mkpod ROLE: make ROLE's namespace a pod called ROLE: a sandbox process with ROLE as its
# UTS hostname, in a systemd-driver kubelet cgroup (…/kubepods.slice/…pod<uid>.slice/
# cri-containerd-<id>.scope, under the cgroup v2 root's droptrace-lab/ so a real kubelet's
# tree is never touched), and <kubelet root>/pods/<uid>/ whose service-account volume
# holds the namespace. A marker there tells `lab down` what to remove.
mkpod() {
  local role=$1 uid cgroot cg dir sa
  uid=$(cat /proc/sys/kernel/random/uuid)
  cgroot=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  if [ -z "$cgroot" ]; then
    echo "mkpod: no cgroup v2 hierarchy is mounted" >&2
    return 1
  fi
  cg="$cgroot/droptrace-lab/kubepods.slice/kubepods-besteffort.slice"
  cg="$cg/kubepods-besteffort-pod${uid//-/_}.slice/cri-containerd-${uid//-/}.scope"
  dir="$LAB_KUBELET_ROOT/pods/$uid"
  sa="$dir/volumes/kubernetes.io~projected/kube-api-access-lab"
  mkdir -p "$cg" "$sa"
  if [ -z "${DROPTRACE_KUBELET_ROOT:-}" ]; then
    mkdir -p "$(dirname "$LAB_KUBELET_LINK")"
    ln -sfn "$LAB_KUBELET_ROOT" "$LAB_KUBELET_LINK"
  fi
  lab_k8s_ns >"$sa/namespace"
  printf 'netns=%s\ncgroup=%s\npod=%s/%s\n' "$(ns "$role")" "$cg" "$(lab_k8s_ns)" "$role" \
    >"$dir/droptrace-lab"
  # ip netns exec and unshare exec, so $! is the sandbox itself; it is put in its cgroup
  # from out here, as `ip netns exec` hides the host's /sys/fs/cgroup from the command.
  # shellcheck disable=SC2016 # $1 belongs to the inner shell
  ip netns exec "$(ns "$role")" unshare --uts sh -c 'hostname "$1" && exec sleep 86400' mkpod "$role" \
    </dev/null >/dev/null 2>&1 &
  local pid=$!
  echo "$pid" >"$cg/cgroup.procs"
  for _ in $(seq 50); do  # ready once the sandbox has named itself and become `sleep`
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ] && return 0
    sleep 0.1
  done
  echo "mkpod: no sandbox process in $cg" >&2
  return 1
}
