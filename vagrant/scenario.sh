#!/usr/bin/env bash
# Break, exercise and diagnose one droptrace lab scenario on the Vagrant cluster.
#
#   ./scenario.sh list                  the scenario table below
#   ./scenario.sh inject SCENARIO       break the node(s) with the scenario's shared fault.sh
#   ./scenario.sh undo SCENARIO         repair them
#   ./scenario.sh run SCENARIO          workload + fault + failing traffic + droptrace's
#                                       diagnosis on the node, then undo and clean up
#   ./scenario.sh agent SCENARIO        the same, diagnosed by the node agent (the DaemonSet
#                                       of deploy/): its droptrace_drops_total must grow
#
# The fault is tracer/lab/scenarios/<name>/fault.sh, the same script the netns lab runs;
# here it runs as root on a real node, from the /droptrace synced folder, with the env
# vars from the table. Env: DURATION (droptrace seconds, 15), HOLD (seconds a LOCKOUT
# fault stays before its automatic undo, 30), KEEP=1 (leave fault and workload in place
# after run), SYNC=0 (skip `vagrant rsync` before injecting).
set -euo pipefail
cd "$(dirname "$0")"
if [ "${BASH_VERSINFO[0]}" -lt 4 ]; then
  echo "scenario.sh: needs bash >= 4 (on macOS: brew install bash)" >&2
  exit 1
fi

DURATION=${DURATION:-15}
HOLD=${HOLD:-30}
KEEP=${KEEP:-0}
SYNC=${SYNC:-1}
NS=droptrace-lab                       # Kubernetes namespace of the workloads
REPO=/droptrace                        # the repository on every node
NODE_ENV=/etc/droptrace-lab.env        # node facts written by provision/common.sh
OUT=/var/tmp/droptrace-lab.jsonl       # droptrace's JSON lines on the watching node
ERR=/var/tmp/droptrace-lab.err
AGENT_NS=droptrace                     # the node agent (deploy/): namespace, label, port
AGENT_LABEL=app.kubernetes.io/name=droptrace
AGENT_PORT=9750
# One source of truth: the scenarios are the folders of tracer/lab/scenarios (each needs an
# entry in the table below; `list` fails for one without).
mapfile -t SCENARIOS < <(cd ../tracer/lab/scenarios && for f in */fault.sh; do echo "${f%/fault.sh}"; done)
[ "${#SCENARIOS[@]}" -gt 0 ] || { echo "scenario.sh: no scenarios in ../tracer/lab/scenarios" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# The one scenario table. For each scenario:
#   FAULTS   "NODE VAR=value ..." per node to run the scenario's fault.sh on, with the
#            env vars its header documents (inject in this order, undo in reverse)
#   WATCH    node where droptrace runs;  EXPECT  the category it must report
#   BEFORE   "NODE CMD" run before the inject and AFTER "NODE CMD" after the undo (as
#            user vagrant, over vagrant ssh): what a VM needs beyond fault.sh to match
#            the netns lab's topology.sh, and handing state back to the CNI/kube-proxy
#   TRAFFIC  "pod NAME CMD..." (kubectl exec in the workload pod) or
#            "node NODE CMD..." (sudo CMD on the node; lab-outside is a netns on cp)
#   LOCKOUT  1 when the fault cuts the node off the network: the node then holds the
#            fault itself for HOLD s (lab/hold-fault.sh as a systemd unit) and undoes it
# Values: \$NAME expands on the node from /etc/droptrace-lab.env (LAB_IFACE = the
# 192.0.2.0/24 NIC, PRIVATE_IFACE = the 198.51.100.0/24 NIC, NODE_IP, POD_IFACE = cni0,
# TUNNEL_IFACE = flannel.1, CLUSTER_POD_CIDR = 198.18.0.0/16, SERVICE_CIDR =
# 198.19.0.0/16); @podcidr:NODE and @podip:POD are looked up with kubectl first.
# ---------------------------------------------------------------------------------------
scenario_table() {
  FAULTS=() BEFORE=() AFTER=() TRAFFIC=() LOCKOUT=0 WATCH="" EXPECT=""
  case "$1" in
    rp-filter-masquerade)
      # As in the netns lab: pods reach "the internet" (203.0.113.10 on lab-outside) over
      # the lab NIC, masqueraded by Flannel, and the provider sends the replies back over
      # the private network (eth2), where strict rp_filter drops them.
      BEFORE=("w1 sudo ip route replace 203.0.113.0/24 via 192.0.2.20 dev \$LAB_IFACE"
        "cp sudo ip -n lab-outside route replace 192.0.2.11/32 via 198.51.100.11 dev outside1")
      FAULTS=("w1 REPLY_IFACE=\$PRIVATE_IFACE POD_CIDR=\$CLUSTER_POD_CIDR")
      AFTER=("cp sudo ip -n lab-outside route del 192.0.2.11/32"
        "w1 sudo ip route del 203.0.113.0/24")
      WATCH=w1 EXPECT=rp_filter
      TRAFFIC=("pod rpf-client timeout 8 wget -q -T 3 -O- http://203.0.113.10:8080/"
        "pod rpf-client ping -c 2 -W 1 203.0.113.10") ;;
    metallb-asymmetric)
      # lab-outside calls VIP 192.0.2.200, which w1 "announces"; w1 DNATs to the pod on w2.
      # As in the netns lab, w1 forwards without SNAT (kube-proxy would masquerade), so w2
      # sees the client's address arrive on flannel.1 while its route back is the lab NIC.
      BEFORE=("w1 sudo iptables -t nat -I POSTROUTING 1 -s 192.0.2.20 -m comment --comment droptrace-lab-no-snat -j RETURN")
      FAULTS=("w2 CLUSTER_IFACE=\$TUNNEL_IFACE")
      AFTER=("w1 sudo iptables -t nat -D POSTROUTING -s 192.0.2.20 -m comment --comment droptrace-lab-no-snat -j RETURN")
      WATCH=w2 EXPECT=rp_filter
      TRAFFIC=("node cp ip netns exec lab-outside curl -sS -m 3 http://192.0.2.200:8080/") ;;
    bridge-nf-hairpin)
      # client and backend of ClusterIP 198.19.0.103 share w1's bridge cni0
      FAULTS=("w1")
      WATCH=w1 EXPECT=bridge_netfilter
      TRAFFIC=("pod bnf-client timeout 8 wget -q -T 3 -O- http://198.19.0.103:8080/") ;;
    iptables-corrupt-firewall)
      # fault.sh rewrites KUBE-FIREWALL rule 1; since Kubernetes 1.28 that chain holds
      # only the localnet rule, so make sure a rule 1 exists, and let kube-proxy (restarted
      # after the undo) write back its own. A pod on w2 calls w1's kubelet and pings w1.
      BEFORE=("w1 sudo iptables -S KUBE-FIREWALL | grep -q -- '^-A' || sudo iptables -A KUBE-FIREWALL -m comment --comment 'kubernetes firewall for dropping marked packets' -m mark --mark 0x8000/0x8000 -j DROP")
      FAULTS=("w1 IPTABLES=iptables")
      AFTER=("cp kubectl -n kube-system delete pod -l k8s-app=kube-proxy --field-selector spec.nodeName=w1")
      WATCH=w1 EXPECT=netfilter LOCKOUT=1
      TRAFFIC=("pod fw-client ping -c 3 -W 1 192.0.2.11"
        "pod fw-client timeout 8 wget -q -T 3 -O- http://192.0.2.11:10250/") ;;
    ip-forward-off)
      # fault.sh sets net.ipv4.ip_forward=0; the pod's ClusterIP backend is on w2
      FAULTS=("w1")
      WATCH=w1 EXPECT=forwarding_disabled
      TRAFFIC=("pod fwd-client timeout 8 wget -q -T 3 -O- http://198.19.0.105:8080/") ;;
    no-route)
      # A VM has a default route (the NAT) that would carry the packet off the lab instead
      # of dropping it: keep w1's pods off the default route for the run. The undo routes
      # via w2's lab address; restarting w1's flanneld puts back its VXLAN route.
      BEFORE=("w1 sudo ip rule del pref 100 2>/dev/null; sudo ip rule del pref 101 2>/dev/null;
        sudo ip rule add pref 100 iif cni0 lookup main suppress_prefixlength 0 &&
        sudo ip rule add pref 101 iif cni0 unreachable")
      FAULTS=("w1 REMOTE_POD_CIDR=@podcidr:w2 REMOTE_NODE_IP=192.0.2.12")
      AFTER=("w1 sudo ip rule del pref 101; sudo ip rule del pref 100"
        "cp kubectl -n kube-flannel delete pod -l app=flannel --field-selector spec.nodeName=w1")
      WATCH=w1 EXPECT=no_route
      TRAFFIC=("pod nr-client timeout 8 wget -q -T 3 -O- http://@podip:nr-server:8080/") ;;
    *)
      die "unknown scenario '$1' (one of: ${SCENARIOS[*]})" ;;
  esac
}

die() { echo "scenario.sh: $*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

on() { # NODE CMD: run CMD through `vagrant ssh` (as user vagrant, bash -l)
  local node=$1
  shift
  vagrant ssh "$node" --no-tty -c "$*"
}

kc() { on cp "kubectl $*"; }

# Expand @podcidr:NODE / @podip:POD in a string (kubectl on cp).
resolve() {
  local s=$1 value
  while [[ $s =~ @(podcidr|podip):([a-z0-9-]+) ]]; do
    case "${BASH_REMATCH[1]}" in
      podcidr) value=$(kc get node "${BASH_REMATCH[2]}" -o 'jsonpath={.spec.podCIDR}') ;;
      podip) value=$(kc -n "$NS" get pod "${BASH_REMATCH[2]}" -o 'jsonpath={.status.podIP}') ;;
    esac
    [ -n "$value" ] || die "could not look up ${BASH_REMATCH[0]} (is the cluster up and the workload applied?)"
    s=${s//"${BASH_REMATCH[0]}"/$value}
  done
  printf '%s' "$s"
}

# Env words go through two shells; allow only what a name, CIDR or interface needs.
check_env_words() {
  local w re='^[A-Z_][A-Z0-9_]*=[-A-Za-z0-9_.:/,$]*$'
  for w in "$@"; do
    [[ $w =~ $re ]] || die "unsafe fault env word: $w"
  done
}

# fault NODE ACTION VAR=value...: run the scenario's fault.sh on NODE as root.
fault() {
  local node=$1 action=$2
  shift 2
  check_env_words "$@"
  local script="$REPO/tracer/lab/scenarios/$SCENARIO/fault.sh"
  local load="set -a && . $NODE_ENV && set +a"
  say "$node: fault.sh $action $*"
  if [ "$LOCKOUT" = 1 ] && [ "$action" = inject ]; then
    # The node is about to lose its network (our SSH session included): it holds the
    # fault itself from +3 s (after this SSH call returns) and undoes it HOLD s later.
    local setenv=() w
    for w in "$@"; do setenv+=("--setenv=$w"); done
    on "$node" "$load && sudo systemctl stop droptrace-lab-fault.timer droptrace-lab-fault.service 2>/dev/null;
      sudo systemctl reset-failed droptrace-lab-fault.service 2>/dev/null;
      sudo systemd-run --quiet --collect --unit=droptrace-lab-fault --on-active=3 ${setenv[*]} \\
        /bin/bash $REPO/vagrant/lab/hold-fault.sh $script $HOLD"
    say "$node: off the network from +3 s until the automatic undo at +$((HOLD + 3)) s"
  elif [ "$LOCKOUT" = 1 ]; then # undo: stop a hold still running first
    on "$node" "$load && { sudo systemctl stop droptrace-lab-fault.timer droptrace-lab-fault.service 2>/dev/null || true; } &&
      sudo env $* bash $script $action"
  else
    on "$node" "$load && sudo env $* bash $script $action"
  fi
}

# NODE CMD entries of BEFORE/AFTER, with the node's facts loaded.
node_steps() {
  local entry
  for entry in "$@"; do
    entry=$(resolve "$entry")
    say "${entry%% *}: ${entry#* }"
    on "${entry%% *}" "set -a && . $NODE_ENV && set +a && ${entry#* }"
  done
}

# Every fault of the scenario, with @lookups resolved; undo runs in reverse order.
faults() {
  local action=$1 i entry
  local -a words order
  if [ "$action" = inject ] && [ ${#BEFORE[@]} -gt 0 ]; then node_steps "${BEFORE[@]}"; fi
  order=("${!FAULTS[@]}")
  if [ "$action" = undo ]; then
    order=()
    for ((i = ${#FAULTS[@]} - 1; i >= 0; i--)); do order+=("$i"); done
  fi
  for i in "${order[@]}"; do
    entry=$(resolve "${FAULTS[$i]}")
    read -r -a words <<<"$entry"
    fault "${words[@]:0:1}" "$action" "${words[@]:1}"
  done
  if [ "$action" = undo ] && [ ${#AFTER[@]} -gt 0 ]; then node_steps "${AFTER[@]}"; fi
}

fault_nodes() {
  local entry
  for entry in "${FAULTS[@]}"; do printf '%s\n' "${entry%% *}"; done | sort -u
}

sync_repo() {
  [ "$SYNC" = 1 ] || return 0
  [ -f "../tracer/lab/scenarios/$SCENARIO/fault.sh" ] ||
    die "../tracer/lab/scenarios/$SCENARIO/fault.sh not found in this checkout"
  local -a nodes
  mapfile -t nodes < <( (fault_nodes; echo "$WATCH") | sort -u)
  say "vagrant rsync ${nodes[*]} (the nodes run fault.sh from /droptrace)"
  vagrant rsync "${nodes[@]}" >/dev/null
}

workload() { # apply|delete
  local manifest="manifests/$SCENARIO.yaml"
  if [ "$1" = apply ]; then
    say "cp: kubectl apply -f $manifest"
    vagrant ssh cp --no-tty -c "kubectl apply -f -" <"$manifest"
    kc -n "$NS" wait --for=condition=Ready pod -l "droptrace-lab/scenario=$SCENARIO" --timeout=180s
  else
    say "cp: deleting the $SCENARIO workload"
    kc -n "$NS" delete pod,service -l "droptrace-lab/scenario=$SCENARIO" --wait=false --ignore-not-found
  fi
}

traffic() {
  local entry kind target
  local -a cmd
  for entry in "${TRAFFIC[@]}"; do
    entry=$(resolve "$entry")
    read -r kind target _ <<<"$entry"
    read -r -a cmd <<<"$entry"
    case "$kind" in
      pod)
        say "$target: ${cmd[*]:2} (expected to fail)"
        kc -n "$NS" exec "$target" -- "${cmd[@]:2}" || true ;;
      node)
        say "$target: ${cmd[*]:2} (expected to fail)"
        on "$target" "sudo ${cmd[*]:2}" || true ;;
      *) die "bad TRAFFIC entry: $entry" ;;
    esac
  done
}

watch_start() { # SECONDS: droptrace as a transient unit, so it outlives our SSH session
  say "$WATCH: droptrace --json --duration $1"
  on "$WATCH" "sudo rm -f $OUT $ERR; sudo systemctl reset-failed droptrace-lab-watch 2>/dev/null;
    sudo systemd-run --quiet --collect --unit=droptrace-lab-watch \
      -p StandardOutput=file:$OUT -p StandardError=file:$ERR \
      $REPO/.venv/bin/droptrace --json --duration $1"
}

watch_collect() { # SECONDS FILE
  local limit=$(($1 + 60))
  on "$WATCH" "for _ in \$(seq $limit); do systemctl is-active --quiet droptrace-lab-watch || break; sleep 1; done
    sudo cat $OUT" >"$2"
}

report() { # FILE
  local file=$1 hits
  echo
  say "droptrace on $WATCH (saved in vagrant/$file); expected category: $EXPECT"
  hits=$(grep -cE "\"category\": ?\"$EXPECT\"" "$file" || true)
  grep -E "\"category\": ?\"$EXPECT\"" "$file" | head -n 3 || true
  if [ "$hits" -gt 0 ]; then
    say "PASS: $hits drop(s) diagnosed as $EXPECT"
    return 0
  fi
  say "FAIL: no drop diagnosed as $EXPECT; categories seen:"
  grep -oE '"category": ?"[a-z_]+"' "$file" | sort | uniq -c || echo "    (none)"
  on "$WATCH" "sudo tail -n 5 $ERR" || true
  return 1
}

cmd_list() {
  local s entry
  printf '%-26s %-5s %-20s %s\n' SCENARIO WATCH EXPECT "FAULT NODE + ENV"
  for s in "${SCENARIOS[@]}"; do
    scenario_table "$s"
    for entry in "${FAULTS[@]}"; do
      printf '%-26s %-5s %-20s %s\n' "$s" "$WATCH" "$EXPECT" "$entry"
    done
  done
}

# Inject the fault and send the failing traffic; undo on an early exit. A LOCKOUT node is
# waited for until it has undone the fault itself and is back on the network.
exercise() {
  if [ "$KEEP" != 1 ] && [ "$LOCKOUT" != 1 ]; then
    trap 'say "stopped early: undoing the fault"; faults undo || true' EXIT
  fi
  local injected=$SECONDS back
  faults inject
  if [ "$LOCKOUT" = 1 ]; then sleep 5; fi # the scheduled inject
  traffic
  if [ "$LOCKOUT" = 1 ]; then
    back=$((injected + HOLD + 10 - SECONDS))
    say "waiting ${back}s for $WATCH to undo the fault and come back"
    if [ "$back" -gt 0 ]; then sleep "$back"; fi
  fi
}

finish() { # undo the fault and delete the workload, unless KEEP=1
  trap - EXIT
  if [ "$KEEP" = 1 ]; then
    say "KEEP=1: fault and workload left in place; './scenario.sh undo $SCENARIO' repairs"
    return 0
  fi
  if [ "$LOCKOUT" = 1 ]; then # the node undid the fault itself
    if [ ${#AFTER[@]} -gt 0 ]; then node_steps "${AFTER[@]}"; fi
  else
    faults undo
  fi
  workload delete
}

cmd_run() {
  local watch_s=$DURATION result=0
  [ "$LOCKOUT" = 1 ] && watch_s=$((HOLD + 15))
  sync_repo
  workload apply
  watch_start "$watch_s"
  sleep 5 # loading and attaching the BPF programs
  exercise
  mkdir -p .lab
  local file=".lab/$SCENARIO-$WATCH.jsonl"
  watch_collect "$watch_s" "$file"
  report "$file" || result=1
  finish
  return "$result"
}

agent_pod() { # NODE: the name of the droptrace agent's pod there
  kc -n "$AGENT_NS" get pod -l "$AGENT_LABEL" --field-selector "spec.nodeName=$1" \
    -o "'jsonpath={.items[0].metadata.name}'"
}

agent_metrics() { # NODE: the agent's /metrics, read on the node (it listens on the node's address)
  on "$1" "set -a && . $NODE_ENV && set +a && curl -fsS -m 5 http://\$NODE_IP:$AGENT_PORT/metrics"
}

agent_drops() { # NODE CATEGORY: droptrace_drops_total of that category, summed over its labels
  agent_metrics "$1" | awk -v want="category=\"$2\"" '/^droptrace_drops_total\{/ && index($0, want) {
      v = $0; sub(/^[^}]*\}[ \t]+/, "", v); split(v, f, /[ \t]+/); n += f[1] }
    END { printf "%d\n", n }'
}

cmd_agent() {
  local pod before after result=0 started=$SECONDS
  sync_repo
  pod=$(agent_pod "$WATCH")
  [ -n "$pod" ] || die "no droptrace agent on $WATCH: kubectl apply -k deploy/ (vagrant provision cp --provision-with agent)"
  kc -n "$AGENT_NS" wait --for=condition=Ready "pod/$pod" --timeout=120s >/dev/null
  workload apply
  before=$(agent_drops "$WATCH" "$EXPECT")
  say "$WATCH: agent $pod counts $before $EXPECT drop(s) before the fault"
  exercise
  sleep 5 # the agent explains drops on a thread of its own
  after=$(agent_drops "$WATCH" "$EXPECT")
  mkdir -p .lab
  local file=".lab/$SCENARIO-$WATCH-agent.jsonl"
  kc -n "$AGENT_NS" logs "$pod" -c droptrace --since="$((SECONDS - started + 10))s" >"$file" || true
  echo
  say "agent $pod on $WATCH: droptrace_drops_total{category=\"$EXPECT\"} $before -> $after (its JSON lines in vagrant/$file)"
  grep -E "\"category\": ?\"$EXPECT\"" "$file" | head -n 3 || true
  if [ "$after" -gt "$before" ]; then
    say "PASS: the agent counted $((after - before)) drop(s) as $EXPECT"
  else
    say "FAIL: the agent counted no new $EXPECT drop; its counters and hooks:"
    agent_metrics "$WATCH" | grep -E '^droptrace_(drops_total|hook_active)' | head -n 20 || true
    result=1
  fi
  finish
  return "$result"
}

[ $# -eq 2 ] || [ "${1:-}" = list ] || die "usage: $0 list | inject|undo|run|agent SCENARIO"
case "$1" in
  list) cmd_list ;;
  inject | undo | run | agent)
    SCENARIO=$2
    scenario_table "$SCENARIO"
    case "$1" in
      inject) sync_repo; faults inject ;;
      undo) faults undo ;;
      run) cmd_run ;;
      agent) cmd_agent ;;
    esac ;;
  *) die "usage: $0 list | inject|undo|run|agent SCENARIO" ;;
esac
