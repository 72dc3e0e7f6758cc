#!/usr/bin/env bash
# `make test-kernels`: tests/matrix on the host's kernel, then inside each kernel of $KERNELS
# (Debian packages) booted under emulation with virtme-ng; one table: case x kernel.
# Kernels, their modules, apt lists, the virtme-ng venv and the guests' bytecode are cached
# outside the checkout (DROPTRACE_KERNEL_CACHE, default /var/cache/droptrace/kernels), so a
# fresh clone (CI) reuses them; results and the guest image stay in .cache/kernels.
set -euo pipefail
cd "$(dirname "$0")/.."

KERNELS=${KERNELS:-5.10 6.1 6.12}
# Seconds per kernel, boot included; the tests inside stop waiting a minute or more before,
# so pytest reports what failed and where. 25 minutes: 5x what 5.10 took on 2 busy cores
# (the host's own column: 5 minutes, 10x). With `make test`, .ci/run stays under 45 minutes.
GUEST_TIMEOUT=${GUEST_TIMEOUT:-1500}
HOST_TIMEOUT=${HOST_TIMEOUT:-300}
APT_PACKAGES=(qemu-system-x86 kmod busybox-static file squashfs-tools)
# Where each kernel series comes from: the Debian suite whose linux-image-amd64 has it.
declare -A SUITE=([5.10]=bullseye [6.1]=bookworm [6.12]=bookworm-backports)

die() { echo "test-kernels: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, and BPF inside the guests)"
[ -x .venv/bin/python ] || die "run \`make install\` first"
for k in $KERNELS; do
  [ -n "${SUITE[$k]:-}" ] || die "unknown kernel '$k' (known: ${!SUITE[*]})"
done

# shellcheck source=scripts/apt.sh
source scripts/apt.sh  # the working directory is the checkout (cd above)
apt_install_missing "${APT_PACKAGES[@]}"

CACHE=${DROPTRACE_KERNEL_CACHE:-/var/cache/droptrace/kernels}
if ! mkdir -p "$CACHE" 2>/dev/null || [ ! -w "$CACHE" ]; then
  CACHE=$PWD/.cache/kernels  # no shared cache on this machine: one per checkout
  mkdir -p "$CACHE"
fi
WORK=$PWD/.cache/kernels
mkdir -p "$WORK"
# One run at a time prepares the shared cache (another checkout's run, CI, may share it).
exec 9>"$CACHE/.lock"
flock 9

VENV=$CACHE/vng-venv
if [ ! -x "$VENV/bin/vng" ] || ! cmp -s scripts/kernels-requirements.txt "$VENV/.requirements"; then
  echo "==> virtme-ng into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/kernels-requirements.txt
  cp scripts/kernels-requirements.txt "$VENV/.requirements"
fi
export PATH=$VENV/bin:$PATH   # vng runs virtme-run from PATH

# A private apt configuration: the machine's own Debian source (same URIs and key) with the
# suites the matrix needs. The system's sources and lists are left alone.
APT=$CACHE/apt
mkdir -p "$APT/sources.list.d" "$APT/lists/partial"
# Every suite of the matrix, whatever $KERNELS: one stable set of lists, updated once a day.
suites=$(printf '%s\n' "${SUITE[@]}" | sort -u | tr '\n' ' ')
awk -v suites="${suites% }" 'BEGIN { RS = ""; FS = "\n" }
  /\nSuites:[^\n]*bookworm/ && !/security/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^(Types|URIs|Components|Signed-By):/) print $i
    print "Suites: " suites; exit }' /etc/apt/sources.list.d/debian.sources >"$APT/sources.list.d/matrix.sources"
grep -q '^URIs:' "$APT/sources.list.d/matrix.sources" ||
  die "no Debian bookworm entry in /etc/apt/sources.list.d/debian.sources to derive from"
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT/sources.list.d"
  -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
  -o "APT::Sandbox::User=root")
if ! cmp -s "$APT/sources.list.d/matrix.sources" "$APT/lists/.sources" ||
  [ -z "$(find "$APT/lists" -maxdepth 1 -name '*Packages*' -mtime -1 | head -1)" ]; then
  echo "==> apt-get update ($suites)"
  if ! apt-get "${APT_OPTS[@]}" update -qq; then
    # Offline, a kernel already unpacked still boots: keep yesterday's lists.
    find "$APT/lists" -maxdepth 1 -name '*Packages*' | grep -q . || die "apt-get update failed"
    echo "    apt-get update failed: using the lists of an earlier run"
  fi
  cp "$APT/sources.list.d/matrix.sources" "$APT/lists/.sources"
fi

# The linux-image package of a series: what linux-image-amd64 of that version depends on.
image_package() {
  apt-cache "${APT_OPTS[@]}" show linux-image-amd64 | awk -v v="$1." '
    /^Version:/ { ok = index($2, v) == 1 }
    ok && /^Depends:/ { print $2; exit }'
}

# Unpacks a kernel and its modules into $CACHE/<package>/root; prints that directory.
fetch_kernel() {
  local pkg dir
  pkg=$(image_package "$1")
  [ -n "$pkg" ] || die "no linux-image package for $1 in ${SUITE[$1]}"
  dir=$CACHE/$pkg
  if [ ! -d "$dir/root/boot" ]; then
    echo "==> fetching $pkg" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && apt-get "${APT_OPTS[@]}" download -qq "$pkg" >/dev/null)
    dpkg-deb -x "$dir"/*.deb "$dir/root.tmp" && mv "$dir/root.tmp" "$dir/root"
    rm -f "$dir"/*.deb
  fi
  echo "$dir"
}

declare -A KDIR
for k in $KERNELS; do KDIR[$k]=$(fetch_kernel "$k"); done
flock -u 9

RESULTS=$WORK/results
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
declare -A SECONDS_TAKEN

# The host's own kernel first: the same tests and report, no guest.
echo "==> host: $(uname -r) (log: $RESULTS/host/pytest.log)"
mkdir -p "$RESULTS/host"
started=$(date +%s)
DT_BUDGET=$HOST_TIMEOUT timeout --kill-after=30 "$HOST_TIMEOUT" \
  bash scripts/kernel-guest.sh "$RESULTS/host" </dev/null || true
SECONDS_TAKEN[host]=$(($(date +%s) - started))
echo "    host took ${SECONDS_TAKEN[host]} s, pytest exit $(cat "$RESULTS/host/rc" 2>/dev/null || echo none)"

if [ -n "$KERNELS" ]; then
  echo "==> bytecode and image of the guests' Python"
  .venv/bin/python scripts/guest_python.py "$CACHE/pycache" "$WORK/guest-python.sqfs"
fi
for k in $KERNELS; do
  kdir=${KDIR[$k]}
  kimg=$(ls "$kdir"/root/boot/vmlinuz-*)
  out=$RESULTS/$k
  mkdir -p "$out"
  echo "==> $k: booting $(basename "$kimg") under emulation (log: $out/console.log)"
  started=$(date +%s)
  # init_on_alloc=0: the 5.10 9p client allocates two msize (512 KB) buffers per request, and
  # Debian's 5.10 zeroes them (init_on_alloc=1): ~15 ms per file access under emulation.
  # --rodir: the kernel's modules, hidden in the guest when under /var/cache (a tmpfs there).
  # --rwdir: the only host directory the guest may write; the rest of / is read-only there.
  timeout --kill-after=30 "$GUEST_TIMEOUT" vng --disable-kvm --disable-microvm --force-9p \
    --run "$kimg" -m 3G --cpus 2 --verbose -a loglevel=1 -a init_on_alloc=0 \
    --rodir="$kdir" --rwdir="$out" \
    -- "DT_BUDGET=$((GUEST_TIMEOUT - 60)) DT_SLOW=6 DT_IMAGE=$WORK/guest-python.sqfs bash $PWD/scripts/kernel-guest.sh $out" \
    </dev/null >"$out/console.log" 2>&1 || true
  SECONDS_TAKEN[$k]=$(($(date +%s) - started))
  echo "    $k took ${SECONDS_TAKEN[$k]} s, pytest exit $(cat "$out/rc" 2>/dev/null || echo none)"
done

times=("host=${SECONDS_TAKEN[host]}")
for k in $KERNELS; do times+=("$k=${SECONDS_TAKEN[$k]}"); done
.venv/bin/python scripts/kernel_table.py "$RESULTS" "$HOST_TIMEOUT" "$GUEST_TIMEOUT" "${times[@]}"
