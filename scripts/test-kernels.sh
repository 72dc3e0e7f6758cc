#!/usr/bin/env bash
# `make test-kernels`: boot each kernel of $KERNELS (Debian packages) under emulation with
# virtme-ng, run tests/matrix inside, and print one table: kernel x case -> category.
# Kernels, their modules, apt lists and the virtme-ng venv live in .cache/kernels (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

KERNELS=${KERNELS:-5.10 6.1 6.12}
CACHE=${DROPTRACE_KERNEL_CACHE:-$PWD/.cache/kernels}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-1500}   # seconds per kernel: 25 minutes
APT_PACKAGES=(qemu-system-x86 kmod busybox-static file)
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

VENV=$CACHE/vng-venv
mkdir -p "$CACHE"
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
  apt-get "${APT_OPTS[@]}" update -qq
  cp "$APT/sources.list.d/matrix.sources" "$APT/lists/.sources"
fi

# The linux-image package of a series: what linux-image-amd64 of that version depends on.
image_package() {
  apt-cache "${APT_OPTS[@]}" show linux-image-amd64 | awk -v v="$1." '
    /^Version:/ { ok = index($2, v) == 1 }
    ok && /^Depends:/ { print $2; exit }'
}

# Unpacks a kernel and its modules into $CACHE/<package>/root; prints the vmlinuz path.
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
  ls "$dir"/root/boot/vmlinuz-*
}

RESULTS=$CACHE/results
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
declare -A SECONDS_TAKEN
for k in $KERNELS; do
  kimg=$(fetch_kernel "$k")
  out=$RESULTS/$k
  mkdir -p "$out"
  echo "==> $k: booting $(basename "$kimg") under emulation (log: $out/console.log)"
  started=$(date +%s)
  # --rwdir: the only host directory the guest may write; the rest of / is read-only there.
  timeout --kill-after=30 "$GUEST_TIMEOUT" vng --disable-kvm --disable-microvm --force-9p \
    --run "$kimg" -m 3G --cpus 2 --verbose -a loglevel=1 --rwdir="$out" \
    -- "bash $PWD/scripts/kernel-guest.sh $out" </dev/null >"$out/console.log" 2>&1 || true
  SECONDS_TAKEN[$k]=$(($(date +%s) - started))
  echo "    $k took ${SECONDS_TAKEN[$k]} s, pytest exit $(cat "$out/rc" 2>/dev/null || echo none)"
done

times=()
for k in $KERNELS; do times+=("$k=${SECONDS_TAKEN[$k]}"); done
.venv/bin/python scripts/kernel_table.py "$RESULTS" "${times[@]}"
