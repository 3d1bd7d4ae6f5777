#!/usr/bin/env bash
# Builds the container image tidal:<version> from deploy/Dockerfile with buildah, where no image
# registry and no Docker daemon are reachable: the base is a Debian root filesystem made by
# debootstrap from Debian's packages, and the Python wheels are built on the host.
#
#   deploy/image/build.sh [--force] [--oci-archive FILE]
#
#   --force             rebuild the image even if one built from the same inputs exists
#   --oci-archive FILE  also write the image to FILE as an OCI archive, to load where no registry
#                       is reachable: `ctr -n k8s.io images import FILE` on a node,
#                       `podman load -i FILE`, or `skopeo copy oci-archive:FILE docker://REG/tidal:TAG`
#
# Stages (each prints its progress every 30 s and its log path; logs in $TIDAL_TOOLS_DIR/logs/):
#   1. buildah and debootstrap (Debian packages, installed when missing; needs root)
#   2. base root filesystem: debootstrap --variant=minbase bookworm + python3, ca-certificates,
#      tzdata, trimmed and tarred; cached in ${TIDAL_TOOLS_DIR:-$HOME/.cache/tidal/tools}/
#      image-base-<suite>/ with a `.complete` marker holding a fingerprint of its recipe
#   3. wheels of the runtime dependencies (`.[daemon]`: every built-in scaler, no dev or sim extras) for the image's Python 3.11,
#      cached the same way and keyed on pyproject.toml's dependency lists; Tidal's own wheel is
#      built fresh into the build context
#   4. `buildah bud --storage-driver vfs --isolation chroot`; skipped when the image tidal:<version>
#      already carries the fingerprint (label sh.tidal.inputs) of these exact inputs
# The image's size is printed and written to $TIDAL_TOOLS_DIR/logs/image-size.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TOOLS=${TIDAL_TOOLS_DIR:-$HOME/.cache/tidal/tools}
LOGS=$TOOLS/logs
PY=${PYTHON:-python3}
SUITE=bookworm                              # Debian 12: python3.11, glibc 2.36
BASE_PACKAGES=python3,ca-certificates,tzdata
BUILDAH=(buildah --storage-driver vfs)
mkdir -p "$TOOLS" "$LOGS"

force=no archive=
while (($#)); do
  case $1 in
    --force) force=yes ;;
    --oci-archive) archive=${2:?--oci-archive needs a file name}; shift ;;
    --oci-archive=*) archive=${1#*=} ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "[image] unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# Another build (a second `make image`, a test session) may run at the same time: one at a time.
exec 9>"$TOOLS/image.lock"
flock 9

fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# logged NAME COMMAND...: run COMMAND with its output in $LOGS/NAME.log, a progress line every
# 30 s, and the log's last lines on failure.
logged() {
  local name=$1; shift
  local log=$LOGS/$name.log start=$SECONDS ticker
  echo "[image] $name: running (log: $log)"
  ( while sleep 30 >/dev/null 2>&1; do echo "[image] $name: still running, $((SECONDS - start)) s so far; last log line: $(tail -n 1 "$log" 2>/dev/null | cut -c1-120)"; done ) &
  ticker=$!
  # In the background, not as an `if` condition: there `set -e` would not apply inside COMMAND.
  "$@" >"$log" 2>&1 &
  if ! wait "$!"; then
    kill "$ticker" 2>/dev/null || true
    echo "[image] $name: FAILED after $((SECONDS - start)) s; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    return 1
  fi
  kill "$ticker" 2>/dev/null || true
  echo "[image] $name: done in $((SECONDS - start)) s"
}

# stage NAME DIR FINGERPRINT COMMAND...: run COMMAND DIR unless DIR/.complete holds FINGERPRINT.
stage() {
  local name=$1 dir=$2 fp=$3; shift 3
  if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$fp" ]]; then
    echo "[image] $name: cached in $dir"
    return 0
  fi
  unmount_under "$dir"
  rm -rf --one-file-system "$dir" && mkdir -p "$dir"
  logged "$name" "$@" "$dir"
  echo "$fp" >"$dir/.complete"
}

# An interrupted debootstrap can leave /proc or /sys mounted inside its target: never delete
# through a mount.
unmount_under() {
  local m
  [[ -d $1 ]] || return 0
  findmnt -rn -o TARGET | grep -F "$1/" | sort -r | while read -r m; do umount -l "$m"; done || true
}

# The Debian mirror apt is configured with (deb822 .sources or one-line sources.list).
debian_mirror() {
  local m
  m=$(awk '/^URIs:/ {u=$2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "'$SUITE'") {print u; exit}}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  [[ -n $m ]] || m=$(awk '$1 == "deb" && $3 == "'$SUITE'" {print $2; exit}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
  echo "${TIDAL_DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

build_base() {
  local out=$1 rootfs=$1/rootfs
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$(debian_mirror)"
  unmount_under "$rootfs"
  # Nothing at run time reads documentation, translations or apt's package lists.
  rm -rf "$rootfs"/usr/share/{doc,man,info,locale}/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old
  tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -C "$rootfs" -cf "$out/base.tar" .
  rm -rf --one-file-system "$rootfs"
  ls -l "$out/base.tar"
}

# The dependency lists of pyproject.toml without the dev extra: the wheel cache's key.
runtime_requirements() {
  "$PY" - "$ROOT/pyproject.toml" <<'PY'
import json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = {k: v for k, v in project.get("optional-dependencies", {}).items() if k != "dev"}
print(json.dumps([project["dependencies"], extras], sort_keys=True))
PY
}

# Wheels are built by the host's pip for the host's interpreter, so that interpreter must match
# the image's: CPython 3.11 on a glibc no newer than bookworm's 2.36 (manylinux wheels the host
# picks must load in the image).
check_host_python() {
  "$PY" - <<'PY'
import platform, sys
libc, version = platform.libc_ver()
if sys.version_info[:2] != (3, 11) or platform.python_implementation() != "CPython":
    sys.exit(f"[image] wheels need a host CPython 3.11 (the image's); {sys.executable} is {platform.python_version()}")
if libc != "glibc" or tuple(map(int, version.split(".")[:2])) > (2, 36):
    sys.exit(f"[image] the host's {libc} {version} is newer than the image's glibc 2.36")
PY
}

build_wheels() {
  local out=$1
  "$PY" -m pip wheel --wheel-dir "$out" "$ROOT[daemon]" pip
  rm -f "$out"/tidal-*.whl  # Tidal's own wheel is built fresh for every image
  ls "$out"
}

# What the image is made of: the recipe (this script, the Dockerfile), the base, the wheels and
# every file that goes into Tidal's wheel (README.md only becomes its long description: left out).
inputs_fingerprint() {
  {
    cat "$HERE/build.sh" "$ROOT/deploy/Dockerfile" "$BASE/.complete" "$WHEELS/.complete"
    cd "$ROOT" && find pyproject.toml scaler scalers metrics_api -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

build_image() {
  local context=$TOOLS/image-context
  rm -rf "$context" && mkdir -p "$context"
  ln "$BASE/base.tar" "$context/base.tar" 2>/dev/null || cp "$BASE/base.tar" "$context/base.tar"
  mkdir "$context/wheels"
  cp "$WHEELS"/*.whl "$context/wheels/"
  "$PY" -m pip wheel --no-deps --wheel-dir "$context/wheels" "$ROOT"
  "${BUILDAH[@]}" bud --isolation chroot --layers=false --pull=false \
    --build-arg "VERSION=$VERSION" --label "sh.tidal.inputs=$INPUTS" \
    -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$context"
  # Each rebuild leaves the previous image untagged: drop those, and the stages' leftovers.
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  rm -rf "$context"
}

start=$SECONDS
echo "[image] stage 1/4: buildah and debootstrap"
bash "$ROOT/deploy/local/install-system-deps.sh" image
check_host_python
VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")
IMAGE=tidal:$VERSION

echo "[image] stage 2/4: base root filesystem (Debian $SUITE minbase + $BASE_PACKAGES)"
BASE=$TOOLS/image-base-$SUITE
stage image-base "$BASE" "$(declare -f build_base unmount_under | fingerprint)-$BASE_PACKAGES" build_base

echo "[image] stage 3/4: wheels of the runtime dependencies"
WHEELS=$TOOLS/image-wheels-py311
stage image-wheels "$WHEELS" "$(runtime_requirements | fingerprint)" build_wheels

echo "[image] stage 4/4: $IMAGE"
INPUTS=$(inputs_fingerprint)
have=$("${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "sh.tidal.inputs"}}' "$IMAGE" 2>/dev/null || true)
if [[ $force == no && $have == "$INPUTS" ]]; then
  echo "[image] $IMAGE: cached (inputs $INPUTS)"
else
  logged image-build build_image
fi

size=$("${BUILDAH[@]}" images --noheading --format '{{.Size}}' "$IMAGE")
echo "$IMAGE $size inputs=$INPUTS built=$(date -u +%FT%TZ)" >"$LOGS/image-size.txt"
echo "[image] $IMAGE: $size (recorded in $LOGS/image-size.txt)"

if [[ -n $archive ]]; then
  rm -f "$archive"
  logged image-export "${BUILDAH[@]}" push "$IMAGE" "oci-archive:$archive:$IMAGE"
  echo "[image] wrote $archive ($(du -h "$archive" | cut -f1))"
fi
echo "[image] ready in $((SECONDS - start)) s"
