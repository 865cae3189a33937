#!/usr/bin/env bash
# A local base image where no registry serves one: Debian bookworm's minimal root file system from the
# Debian archive (debootstrap), with Python 3.11, venv and the CA certificates, imported as an image.
#   docker/base.sh [NAME]      (default localhost/metaheac-base:bookworm; needs root and debootstrap)
# Prints the image's id (sha256:...): docker/build.sh uses it as the base, so the build names an exact one.
set -euo pipefail
name="${1:-localhost/metaheac-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
source "$(dirname "$0")/engine.sh"
command -v debootstrap >/dev/null || { echo "docker/base.sh: debootstrap is not installed" >&2; exit 2; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$mirror" >&2
# No apt lists or caches in the image: nothing is installed in it later but with pip.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | "$engine" import --change 'CMD ["/bin/bash"]' - "$name" >/dev/null
"$engine" image inspect --format '{{.Id}}' "$name"
