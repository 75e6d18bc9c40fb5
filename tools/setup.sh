#!/usr/bin/env bash
# Installs what the tests need, idempotently: Python venvs for moto (the AWS emulator),
# MLflow and the reference baseline; Debian's OCI registry; PostgreSQL started.
# Venvs live under $TAXI_CACHE_DIR/venvs, outside the clone, and are reused when their
# requirements file has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TAXI_CACHE_DIR:-$HOME/.cache/taxi-duration}"
mkdir -p "$CACHE/venvs"

bash tools/venv.sh moto

# The local OCI registry (`cargo xtask local up`, image tests): Debian's CNCF distribution build.
if ! command -v docker-registry >/dev/null; then
  apt-get update -qq
  apt-get install -y --no-install-recommends docker-registry
fi
