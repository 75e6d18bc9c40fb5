#!/usr/bin/env bash
# Installs what the tests need, idempotently: Python venvs for moto (the AWS emulator),
# MLflow and the reference baseline; Debian's OCI registry; PostgreSQL started.
# Venvs live under $TAXI_CACHE_DIR/venvs, outside the clone, and are reused when their
# requirements file has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TAXI_CACHE_DIR:-$HOME/.cache/taxi-duration}"
mkdir -p "$CACHE/venvs"

venv() { # name requirements-file
  local dir="$CACHE/venvs/$1" req="$2"
  local stamp="$dir/.requirements.sha256"
  local want; want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  echo "setup: creating venv $1 from $req"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
}

venv moto tools/requirements-moto.txt
venv mlflow tools/requirements-mlflow.txt
