#!/usr/bin/env bash
# Make this machine ready to run or test Hivemind: system packages, then the virtualenv.
# Safe to run again: it installs only what is missing or changed, and says why.
set -euo pipefail
cd "$(dirname "$0")/.."

# The python3 on PATH, unless its minor version differs from Debian's own /usr/bin/python3:
# Ceph's librados/librbd bindings (python3-rados, python3-rbd, only Debian packages, not on
# PyPI) are built for that one and load in any CPython of the same minor version. (On the build
# machine the python3 on PATH runs Python code twice as fast as Debian's: docs/storage.md.)
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  minor='import sys; print(*sys.version_info[:2])'
  if [ -x /usr/bin/python3 ] && [ "$(python3 -c "$minor" 2>/dev/null)" != "$(/usr/bin/python3 -c "$minor")" ]; then
    PYTHON=/usr/bin/python3
  fi
fi
VENV=${HIVEMIND_VENV:-.venv}
REQUIREMENTS=${1:-requirements.txt}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

say() { printf '[bootstrap] %s\n' "$*"; }

missing=()
reasons=()
need() {  # need COMMAND-OR-PATH PACKAGE WHY
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -e "$1" ]; then
    missing+=("$2"); reasons+=("$2: $3")
  fi
}
need dockerd docker.io "the container runtime every node runs"
need redis-server redis-server "the Celery broker, started privately when none answers"
need nft nftables "nft applies the tenant isolation, network policies and load-balancer rules on every node"
need /bin/busybox busybox-static "the binary inside the local hivemind/busybox image (no registry is reachable)"
need btrfs btrfs-progs "btrfs storage pools (btrfs, mkfs.btrfs): enforced volume sizes, O(1) snapshots and clones"
need gocryptfs gocryptfs "encrypted volumes (a FUSE layer on top of any pool)"
need curl curl "downloads gocryptfs 2.5 where Debian's is older (below)"
need fusermount fuse "fusermount, through which gocryptfs mounts the plaintext view of an encrypted volume"
need /usr/lib/python3/dist-packages/rados.cpython-311-x86_64-linux-gnu.so python3-rados "librados for Ceph RBD pools (the control plane talks to Ceph through it)"
need /usr/lib/python3/dist-packages/rbd.cpython-311-x86_64-linux-gnu.so python3-rbd "librbd for Ceph RBD pools: images, snapshots, clones, diffs"
need rbd-fuse rbd-fuse "attaches RBD images on nodes whose kernel has no rbd/nbd (images as files, then a loop device)"
need mkfs.xfs xfsprogs "formats an RBD image on its first attach (xfs: it grows online)"
need mkfs.ext4 e2fsprogs "formats an RBD image on its first attach when its pool says ext4"
need ganesha.nfsd nfs-ganesha "serves a managed NFS pool from its node (one export per volume)"
need /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so nfs-ganesha-vfs "ganesha's VFS backend: exports the pool's directories"
need mount.nfs nfs-common "mounts NFS volumes on nodes whose kernel has an NFS client"
if [ "$REQUIREMENTS" = requirements-dev.txt ]; then
  need /usr/bin/chromium chromium "the browser the dashboard's tests drive (Playwright cannot download its own here)"
  need /usr/share/fonts/truetype/liberation fonts-liberation "fonts for the dashboard's screenshots (chromium only recommends them)"
  need systemd-analyze systemd "systemd-analyze verifies the shipped service units (deploy/systemd)"
  need promtool prometheus "promtool checks what /metrics serves (and a real Prometheus scrapes it in the tests)"
  need prometheus-alertmanager prometheus-alertmanager "a real Alertmanager the notifier tests deliver alerts to (its v2 API)"
  need restic restic "bench/backups.py measures Hivemind's backups side by side with restic"
  need ceph-mon ceph-mon "the tests' throwaway Ceph cluster: its monitor"
  need ceph-osd ceph-osd "the tests' throwaway Ceph cluster: its one OSD (memstore)"
  need ceph-mgr ceph-mgr "the tests' throwaway Ceph cluster: its manager (without one a cluster reports no capacity)"
  need radosgw radosgw "the tests' S3 peer on that cluster (the backup stores' contract suite runs against it)"
  need ceph-authtool ceph-common "ceph-authtool and monmaptool, which make the tests' cluster's keys and monitor map"
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=("python3-venv"); reasons+=("python3-venv: to create the virtualenv")
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing with apt: ${missing[*]}"
  for reason in "${reasons[@]}"; do say "  $reason"; done
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # Another job may hold the dpkg lock: wait for it rather than fail.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
fi

# gocryptfs 2.4 and newer write through FUSE in 1 MiB requests (go-fuse's max_pages); 2.3,
# Debian 12's, in 128 KiB ones, which halves an encrypted volume's write throughput
# (docs/benchmarks.md, "Storage"). Where the one on PATH is older, install Debian 13's 2.5.1
# (a Go binary needing only libc and libssl 3) into /usr/local/bin, its download pinned by hash.
GOCRYPTFS_DEB=pool/main/g/gocryptfs/gocryptfs_2.5.1-2+b1_amd64.deb
GOCRYPTFS_SHA256=fc148da5fe61f1e1fede47c2450ebcc0f750d516bbfe6edd5ec1024d93b4a6d8
gocryptfs_minor=$(gocryptfs -version 2>/dev/null | sed -n 's/^gocryptfs v\{0,1\}2\.\([0-9]*\).*/\1/p')
if [ -z "$gocryptfs_minor" ] || [ "$gocryptfs_minor" -lt 4 ]; then
  if [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then
    say "installing gocryptfs 2.5.1 into /usr/local/bin (the one on PATH is older than 2.4: half the write throughput)"
    tmp=$(mktemp -d)
    curl -fsSL --retry 3 -o "$tmp/gocryptfs.deb" "http://deb.debian.org/debian/$GOCRYPTFS_DEB"
    echo "$GOCRYPTFS_SHA256  $tmp/gocryptfs.deb" | sha256sum -c --quiet -
    dpkg-deb -x "$tmp/gocryptfs.deb" "$tmp/root"
    $SUDO install -m 0755 "$tmp/root/usr/bin/gocryptfs" /usr/local/bin/gocryptfs
    rm -rf "$tmp"
    hash -r
  else
    say "gocryptfs older than 2.4 on a non-amd64 machine: encrypted volumes write at about half speed"
  fi
fi

# A virtualenv made by another interpreter than $PYTHON (an older checkout's choice): made again.
base='import sys; print(sys.base_prefix)'
if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c "$base" 2>/dev/null)" != "$("$PYTHON" -c "$base")" ]; then
  say "making the virtualenv in $VENV again with $PYTHON (it was made by another interpreter)"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtualenv in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# Only Debian's Ceph bindings join the virtualenv (a directory of links on its path), not every
# package Debian installed: everything else comes pinned from requirements*.txt.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
suffix=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
mkdir -p "$VENV/debian-bindings"
for module in rados rbd; do
  if [ -e "/usr/lib/python3/dist-packages/$module$suffix" ]; then
    ln -sfn "/usr/lib/python3/dist-packages/$module$suffix" "$VENV/debian-bindings/$module$suffix"
  else
    say "no $module$suffix from Debian for $PYTHON: this node cannot use RBD pools"
  fi
done
echo "$(cd "$VENV/debian-bindings" && pwd)" > "$site/hivemind-debian-bindings.pth"
# Reinstall only when a requirements file changed since the last install; the
# development set includes the runtime one, so after it `make run` has nothing to do.
stamp="$VENV/.requirements.sha256"
digest=$(cat requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
installed=$(cat "$stamp" 2>/dev/null || true)
if [ "$installed" = "$digest requirements-dev.txt" ] || [ "$installed" = "$digest $REQUIREMENTS" ]; then
  say "Python dependencies up to date"
else
  say "installing the pinned Python dependencies from $REQUIREMENTS"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
  # The project itself (for the `hivemind` command), quietly: setuptools is chatty.
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e . >"$VENV/.install-project.log" 2>&1; then
    cat "$VENV/.install-project.log" >&2
    exit 1
  fi
  echo "$digest $REQUIREMENTS" > "$stamp"
fi

# Azurite, Microsoft's Azure Storage emulator: the Azure Blob peer of the backup location tests.
AZURITE_VERSION=3.37.0
if [ "$REQUIREMENTS" = requirements-dev.txt ] && \
   [ "$(cat "$VENV/azurite/.version" 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  command -v npm >/dev/null 2>&1 || { say "npm is needed for Azurite (apt-get install npm)"; exit 1; }
  say "installing Azurite $AZURITE_VERSION into $VENV/azurite (the tests' Azure Blob peer)"
  npm install --silent --no-audit --no-fund --prefix "$VENV/azurite" "azurite@$AZURITE_VERSION" >/dev/null
  echo "$AZURITE_VERSION" > "$VENV/azurite/.version"
fi
