#!/usr/bin/env bash
# Builds the image of every component from docker/Dockerfile, with docker or podman (docker/engine.sh):
#   docker/build.sh [--cuda] [REGISTRY/PREFIX/]
# CPU: PREFIXmetaheac:VERSION (torch's CPU wheel). --cuda: PREFIXmetaheac:VERSION-cuda (PyPI's CUDA torch,
# several GB). Each is also tagged by a hash of its inputs (Dockerfile, base, setup.cfg, constraints.txt, the
# code): when that tag exists the build is skipped. Prints the build time, the size, and last the image by
# digest, the reference to give `python -m pipelines compile --image`.
# The base: $BASE when set (an exact reference); else python:3.11.11-slim-bookworm by its current digest;
# where no registry answers, the local base of docker/base.sh (made once, then reused).
# torch's CPU wheel: from $TORCH_INDEX (default PyTorch's CPU index), or a torch-*+cpu wheel in $TORCH_WHEELS
# or pip's find-links folder. A CA bundle in $PIP_CERT or pip's `cert` setting goes in as a build secret.
set -euo pipefail
cd "$(dirname "$0")/.."
source docker/engine.sh
variant=cpu
if [ "${1:-}" = --cuda ]; then variant=cuda; shift; fi
prefix="${1:-}"
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' metaheac/__init__.py)"
name="${prefix}metaheac"
tag="$version$([ "$variant" = cuda ] && echo -cuda || true)"
pip_setting() { pip config list 2>/dev/null | sed -n "s/^[a-z:.]*$1='\(.*\)'$/\1/p" | sed -n 1p; }

registry_base=python:3.11.11-slim-bookworm
if [ -z "${BASE:-}" ]; then
  if [ "$engine" = docker ]; then
    digest="$(docker buildx imagetools inspect "$registry_base" --format '{{json .Manifest.Digest}}' 2>/dev/null | tr -d '"')" || true
  else
    digest="$(podman pull -q "docker.io/library/$registry_base" >/dev/null 2>&1 &&
      podman image inspect --format '{{.Digest}}' "docker.io/library/$registry_base")" || true
  fi
  if [[ "${digest:-}" =~ ^sha256:[0-9a-f]{64}$ ]]; then
    BASE="$registry_base@$digest"
  else
    local_base=localhost/metaheac-base:bookworm
    echo "no registry serves $registry_base here: the local base $local_base (docker/base.sh)" >&2
    "$engine" image inspect "$local_base" >/dev/null 2>&1 || docker/base.sh "$local_base" >/dev/null
    BASE="$local_base"
  fi
fi
base_id="$("$engine" image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || echo "$BASE")"
echo "base image: $BASE ($base_id)"

# The wheel folder the Dockerfile mounts: torch's CPU wheel, linked from where pip finds it here.
rm -rf docker/wheels && mkdir -p docker/wheels
if [ "$variant" = cpu ]; then
  torch="$(sed -n 's/^torch==//p' constraints.txt)"
  for folder in ${TORCH_WHEELS:-} ${PIP_FIND_LINKS:-} $(pip_setting find-links); do
    for wheel in "$folder"/torch-"$torch"+cpu-cp311-*.whl; do
      [ -f "$wheel" ] && [ ! -e "docker/wheels/${wheel##*/}" ] && { ln "$wheel" docker/wheels/ 2>/dev/null || cp "$wheel" docker/wheels/; }
    done
  done
fi
wheels="$(ls docker/wheels)"
index="${TORCH_INDEX-$([ -z "$wheels" ] && [ "$variant" = cpu ] && echo https://download.pytorch.org/whl/cpu || true)}"

inputs="$( (echo "$base_id $variant $index $wheels"; cat docker/Dockerfile setup.cfg constraints.txt pyproject.toml README.md
  find metaheac components pipelines -name '*.py' -o -name '*.json' | grep -v __pycache__ | LC_ALL=C sort | xargs cat
  ) | sha256sum | cut -c1-12)"
if "$engine" image inspect "$name:$tag-$inputs" >/dev/null 2>&1; then
  echo "unchanged since the build of $name:$tag-$inputs: reused"
else
  cert="${PIP_CERT:-$(pip_setting cert)}"
  start=$SECONDS
  "$engine" build -f docker/Dockerfile --build-arg BASE="$BASE" \
    --build-arg TORCH_VARIANT="$([ "$variant" = cpu ] && echo +cpu || true)" --build-arg TORCH_INDEX="$index" \
    ${cert:+--secret id=pip_cert,src="$cert"} -t "$name:$tag-$inputs" .
  echo "build time: $((SECONDS - start)) s"
fi
"$engine" tag "$name:$tag-$inputs" "$name:$tag"
size="$("$engine" image inspect --format '{{.Size}}' "$name:$tag")"
echo "image size: $((size / 1000000)) MB"
pinned="$("$engine" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$name:$tag" | sed -n 1p)"
echo "${pinned:-$name:$tag (not in a registry yet: push it, then compile resolves the tag to its digest)}"
