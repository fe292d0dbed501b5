#!/usr/bin/env bash
# Create .venv with the pinned toolchain (constraints/airflow-3.3.txt) and this provider, editable.
# Idempotent: does nothing when the venv already matches the lock and pyproject.toml.
# Another Airflow line in its own venv, e.g. the oldest supported one (what .ci/run does):
#   VENV=.venv-3.0 AURALYTIK_LOCK=constraints/airflow-3.0.txt AURALYTIK_REQS=constraints/dev-3.0.in \
#     bash scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
LOCK="${AURALYTIK_LOCK:-constraints/airflow-3.3.txt}"
REQS="${AURALYTIK_REQS:-constraints/dev.in}"
UV_VERSION="0.13.9"

stamp="$VENV/.auralytik-bootstrap"
want="$(cat "$LOCK" "$REQS" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/airflow" ]; then
  exit 0
fi

echo "Setting up $VENV with the pinned dependencies from $LOCK (first run: a few minutes)..." >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if ! "$VENV/bin/python" -m uv --version 2>/dev/null | grep -q "$UV_VERSION"; then
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
"$VENV/bin/python" -m uv pip install --quiet --python "$VENV/bin/python" \
  -r "$REQS" -c "$LOCK" -e .
echo "$want" > "$stamp"
