# Sourced by scripts/demo and scripts/test: creates .venv with the pinned packages once,
# and again whenever setup.cfg or constraints.txt change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$(cat "$root/setup.cfg" "$root/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "bootstrap: installing pinned packages into $venv (2 to 3 minutes)" >&2
  python3.11 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -c "$root/constraints.txt" -e "$root[dev]"
  "$venv/bin/python" -m pip check
  echo "$stamp" > "$venv/.stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
