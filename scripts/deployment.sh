#!/usr/bin/env bash
# A real Airflow deployment on 127.0.0.1, the one the deployment tests run on (tests/deployment/cluster.py):
# PostgreSQL (metadata DB) + Redis (broker) + CeleryExecutor with two workers, the scheduler, the
# dag-processor, the triggerer, the api-server, the API sandbox and a moto S3 lake, all in one temp dir.
#   bash scripts/deployment.sh up       start it; prints the UI URL and an env file for the airflow CLI
#   bash scripts/deployment.sh status   what runs, and the api-server's health answer
#   bash scripts/deployment.sh down     stop every process and remove the temp dir
# Needs Debian's postgresql and redis-server packages (apt-get install -y postgresql redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m tests.deployment.cluster "$@"
