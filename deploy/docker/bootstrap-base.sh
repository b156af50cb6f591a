#!/usr/bin/env bash
# Make the Dockerfile's base image locally (no registry reachable here): debootstrap a minimal Debian bookworm
# from the Debian mirror this machine's apt already uses, then `docker import` it under the tag the Dockerfile names.
# Cached: does nothing when the tag exists. Usage: bootstrap-base.sh [TAG]   (default debian:bookworm-slim)
set -euo pipefail
TAG="${1:-debian:bookworm-slim}"
SUITE=bookworm

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG already present"
  exit 0
fi

# The first main Debian archive in the apt sources (deb822 .sources or one-line .list); never a hard-coded host.
mirror="$(
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'
  } | grep -E '/debian/?$' | head -n1
)" || true
if [ -z "$mirror" ]; then
  echo "no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
  exit 1
fi

rootfs="$(mktemp -d /tmp/thinksearch-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap --variant=minbase $SUITE from $mirror"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# What a slim image leaves out: apt lists and caches.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' - "$TAG" >/dev/null
echo "imported $TAG"
