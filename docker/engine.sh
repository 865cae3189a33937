# Sourced by docker/*.sh: $engine is docker where a Docker daemon answers, else podman (ENGINE overrides).
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else echo "docker/: neither a running Docker nor podman is here" >&2; exit 2
  fi
fi
engine="$ENGINE"
