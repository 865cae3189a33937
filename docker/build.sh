#!/usr/bin/env bash
# Builds the two images the components use by default (components/spec.py): metaheac:VERSION (CPU) and
# metaheac:VERSION-cuda. An optional registry prefix, e.g. docker/build.sh europe-docker.pkg.dev/PROJECT/repo/
# (then pass the same names as METAHEAC_IMAGE / METAHEAC_CUDA_IMAGE or --image / --cuda-image).
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' metaheac/__init__.py)"
prefix="${1:-}"
# The base image by digest (the Dockerfile's FROM): resolved here from its tag, or given as BASE_DIGEST to
# rebuild exactly an earlier release.
base="$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile)"
digest="${BASE_DIGEST:-$(docker buildx imagetools inspect "$base" --format '{{json .Manifest.Digest}}' | tr -d '"')}"
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "cannot resolve the digest of $base: got '$digest'" >&2; exit 2; }
echo "base image: $base@$digest"
docker build -f docker/Dockerfile --build-arg BASE_DIGEST="$digest" \
  --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t "${prefix}metaheac:${version}" .
docker build -f docker/Dockerfile --build-arg BASE_DIGEST="$digest" -t "${prefix}metaheac:${version}-cuda" .
