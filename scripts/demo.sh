#!/usr/bin/env bash
# Run the example DAG end to end, on this machine only: starts the local Auralytik sandbox,
# runs `airflow dags test auralytik_daily_export` on a throw-away SQLite metadata DB, and prints
# what the DAG wrote. Needs no account and no network (beyond the first install from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

DEMO="$PWD/.demo"
rm -rf "$DEMO" && mkdir -p "$DEMO"
export AIRFLOW_HOME="$DEMO/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW_VAR_AURALYTIK_EXPORT_ROOT="$DEMO/exports"

.venv/bin/python -m airflow_provider_auralytik.sandbox --port 0 --days 4 --per-day 300 \
  >"$DEMO/sandbox.log" 2>&1 &
sandbox_pid=$!
trap 'kill "$sandbox_pid" 2>/dev/null || true; wait "$sandbox_pid" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 100); do
  url="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$DEMO/sandbox.log")"
  [ -n "$url" ] && break
  kill -0 "$sandbox_pid" 2>/dev/null || { cat "$DEMO/sandbox.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "The sandbox did not start:" >&2; cat "$DEMO/sandbox.log" >&2; exit 1; }
echo "Auralytik sandbox: $url"
export AIRFLOW_CONN_AURALYTIK_DEFAULT="{\"conn_type\": \"auralytik\", \"host\": \"$url\", \"password\": \"sandbox-key\"}"

# `airflow dags test <dag> D` covers the day before D: [D - 1 day, D) (docs/recipes.md: which day a run exports).
logical_date="$(date -u -d yesterday +%Y-%m-%d)"
echo "Running: airflow dags test auralytik_daily_export $logical_date  (log: .demo/dags-test.log)"
.venv/bin/airflow db migrate >"$DEMO/db-migrate.log" 2>&1 || { tail -n 30 "$DEMO/db-migrate.log" >&2; exit 1; }
if ! .venv/bin/airflow dags test auralytik_daily_export "$logical_date" >"$DEMO/dags-test.log" 2>&1; then
  tail -n 60 "$DEMO/dags-test.log" >&2
  echo "The DAG run failed: see .demo/dags-test.log" >&2
  exit 1
fi
grep -o "All [0-9,]* *conversations are completed.\|Exporting Auralytik .*\|Done: [^{]*" "$DEMO/dags-test.log" \
  | sed 's/ \[airflow.*//; s/^/  /' || true
echo
.venv/bin/python scripts/show_exports.py "$DEMO/exports"
