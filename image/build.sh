#!/bin/sh
# Build the nodelocaldns container image without a registry or a container engine:
#
#   1. wheels: the project and its pinned runtime dependencies (image/constraints.txt), from PyPI;
#   2. rootfs: Debian bookworm from Debian packages (mmdebstrap, Essential + python3, iptables,
#      nftables, iproute2), the wheels installed into /opt/nodelocaldns by the rootfs's own python;
#   3. pack:   image/oci.py writes an OCI image layout (one gzip layer) and tars it.
#
# Output: build/nodelocaldns-image.oci.tar (import with `skopeo copy oci-archive:... docker://...`,
# `podman load -i ...` or `ctr images import`). Idempotent: every run starts from an empty work dir.
#
# Reproducible: all timestamps come from SOURCE_DATE_EPOCH (default: the last commit's time);
# logs and caches that record the build time are removed. Two builds against the same mirror
# state produce the same archive, byte for byte. Point DEBIAN_MIRROR at a snapshot
# (http://snapshot.debian.org/archive/debian/<YYYYMMDDTHHMMSSZ>) to pin the Debian side too.
#
# Needs root (mmdebstrap --mode=root, chroot), mmdebstrap, GNU tar, python3 >= 3.11; binutils (strip)
# is optional and saves 12 MB.
set -eu

cd "$(dirname "$0")/.."
REPO=$(pwd)

SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OUT=${OUT:-$REPO/build/nodelocaldns-image.oci.tar}
WORK=${WORK:-$REPO/build/image}
TAG=${IMAGE_TAG:-}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
# Same sort order and messages whatever the caller's locale.
export LC_ALL=C.UTF-8 TZ=UTC

[ "$(id -u)" = 0 ] || { echo "image/build.sh: needs root (mmdebstrap --mode=root, chroot)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "image/build.sh: apt-get install mmdebstrap" >&2; exit 1; }

start=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK/wheels" "$(dirname "$OUT")"

# ---- 1. wheels --------------------------------------------------------------------------------
# Build from a copy of the sources so setuptools' build/ and egg-info never touch the work tree.
# setup.py builds the C hot path (src/nodelocaldns/native) into the wheel with this host's compiler
# and Python headers: same CPython minor and glibc as the bookworm rootfs. REQUIRED: no silent
# pure-Python image when the compiler is missing. Built .so files in src/ are left out (rebuilt).
mkdir -p "$WORK/src"
tar -C "$REPO" --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.so' -cf - pyproject.toml setup.py README.md src \
    $(cd "$REPO" && ls LICENSE* 2>/dev/null || true) | tar -C "$WORK/src" -xf -
echo "==> wheels"
NODELOCALDNS_NATIVE_REQUIRED=1 "$PYTHON" -m pip wheel -q --disable-pip-version-check --wheel-dir "$WORK/wheels" \
    -c "$REPO/image/constraints.txt" "$WORK/src" pip
VERSION=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$REPO/pyproject.toml")
TAG=${TAG:-$VERSION}
PIP_WHEEL=$(cd "$WORK/wheels" && ls pip-*.whl)

# ---- 2. rootfs --------------------------------------------------------------------------------
# Essential packages plus what the agent runs (python3, iptables incl. -legacy, nft, ip); no apt,
# no conntrack, no docs. /node-cache is the upstream image's entrypoint path: manifests that say
# `command: ["/node-cache"]` run the agent unchanged. The wheels are installed by pip run from its own wheel file, so pip is
# never installed in the image.
echo "==> rootfs ($SUITE from $MIRROR)"
# merged-/usr by symlinks (as debootstrap does): otherwise bookworm pulls in usrmerge and with it perl.
MERGED_USR_HOOKS=/usr/share/mmdebstrap/hooks/merged-usr
mmdebstrap --quiet --mode=root --variant=essential --format=directory \
    --hook-dir="$MERGED_USR_HOOKS" \
    --include=python3,iptables,nftables,iproute2 \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="copy-in '$WORK/wheels' /tmp" \
    --customize-hook='chroot "$1" python3 -m venv --without-pip /opt/nodelocaldns' \
    --customize-hook="chroot \"\$1\" env -i PATH=/usr/bin:/bin PIP_CONFIG_FILE=/dev/null \
        SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH PYTHONHASHSEED=0 /opt/nodelocaldns/bin/python /tmp/wheels/$PIP_WHEEL/pip install --quiet --no-index \
        --disable-pip-version-check --no-cache-dir --find-links /tmp/wheels nodelocaldns" \
    --customize-hook='ln -s /opt/nodelocaldns/bin/node-cache "$1/usr/local/bin/node-cache"' \
    --customize-hook='ln -s /opt/nodelocaldns/bin/nodelocaldns "$1/usr/local/bin/nodelocaldns"' \
    --customize-hook='ln -s /opt/nodelocaldns/bin/node-cache "$1/node-cache"' \
    --customize-hook='rm -rf "$1/tmp/wheels"' \
    "$SUITE" "$WORK/rootfs" "$MIRROR"

R=$WORK/rootfs
# Wheels ship their extensions with debug info (uvloop: 13 MB of 14); Debian's own are stripped.
if command -v strip >/dev/null; then
    find "$R/opt/nodelocaldns" -name '*.so' -type f -exec strip --strip-unneeded {} +
fi
# Files whose content is the build time or the build host, not the inputs.
rm -rf "$R"/var/log/* "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/var/cache/ldconfig/aux-cache \
    "$R"/var/cache/debconf/*-old "$R"/var/lib/dpkg/*-old "$R"/tmp/* "$R"/root/.cache
: >"$R/etc/machine-id"
# The container runtime provides both.
rm -f "$R/etc/resolv.conf" "$R/etc/hostname"
# Anything created during the build gets SOURCE_DATE_EPOCH; older package files keep theirs.
find "$R" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"

# ---- 3. pack ----------------------------------------------------------------------------------
echo "==> pack"
tar -C "$R" --sort=name --numeric-owner --xattrs --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime -cf "$WORK/layer.tar" .
"$PYTHON" "$REPO/image/oci.py" --layer "$WORK/layer.tar" --out "$OUT" --tag "$TAG" \
    --version "$VERSION" --epoch "$SOURCE_DATE_EPOCH"
rm -f "$WORK/layer.tar"
[ "${KEEP_ROOTFS:-0}" = 1 ] || rm -rf "$R" "$WORK/src"   # KEEP_ROOTFS=1 leaves it for inspection

size=$(stat -c %s "$OUT")
echo "==> $OUT: $size bytes ($(( (size + 524288) / 1048576 )) MiB), sha256 $(sha256sum "$OUT" | cut -d' ' -f1)"
echo "==> built in $(( $(date +%s) - start ))s"
