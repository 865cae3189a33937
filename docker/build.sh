#!/usr/bin/env bash
# Builds the two images the components use by default (components/spec.py): metaheac:VERSION (CPU) and
# metaheac:VERSION-cuda. An optional registry prefix, e.g. docker/build.sh europe-docker.pkg.dev/PROJECT/repo/
# (then pass the same names as METAHEAC_IMAGE / METAHEAC_CUDA_IMAGE or --image / --cuda-image).
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' metaheac/__init__.py)"
prefix="${1:-}"
docker build -f docker/Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
  -t "${prefix}metaheac:${version}" .
docker build -f docker/Dockerfile -t "${prefix}metaheac:${version}-cuda" .
