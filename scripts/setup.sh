#!/usr/bin/env bash
# Sets up a fresh Debian machine for pyrunsc: system packages, a virtualenv in
# .venv with pyrunsc installed (editable) and its dev tools, and the example
# busybox bundle's rootfs. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PYTHON="${PYTHON:-python3}"
need=()
for pkg in busybox-static diod gcc; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

# The example bundle's rootfs: Debian's static busybox and its applet links.
rootfs=examples/busybox/rootfs
mkdir -p "$rootfs"/{bin,etc,root,tmp,proc,sys,dev}
install -m 0755 /bin/busybox "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
echo "setup: done (.venv, $rootfs)" >&2
