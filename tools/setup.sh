#!/usr/bin/env bash
# Installs what the tests need, idempotently: Python venvs for moto (the AWS emulator),
# MLflow and the reference baseline; Debian's OCI registry; PostgreSQL started; cargo-deny and
# every crate of Cargo.lock, for the offline `deny` step of `cargo xtask ci`.
# Venvs live under $TAXI_CACHE_DIR/venvs, cargo-deny under $TAXI_CACHE_DIR/tools, outside the
# clone; both are reused when their requirements file (or pinned version) has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TAXI_CACHE_DIR:-$HOME/.cache/taxi-duration}"
mkdir -p "$CACHE/venvs"

# tools/venv.sh holds the stamp logic, shared with `cargo xtask local up` (moto on first use).
venv() { # name requirements-file
  bash tools/venv.sh "$1" "$2"
}

venv moto tools/requirements-moto.txt
venv mlflow tools/requirements-mlflow.txt

# The Python baseline for side-by-side benchmarks, when ../shared is beside the clone.
if [ -f ../shared/reference/requirements.txt ]; then
  venv reference ../shared/reference/requirements.txt
fi

# The local OCI registry (`cargo xtask local up`, image tests): Debian's CNCF distribution build.
if ! command -v docker-registry >/dev/null; then
  apt-get update -qq
  apt-get install -y --no-install-recommends docker-registry
fi

# PostgreSQL for the monitoring metrics (xtask monitor tests, Grafana); see tools/postgres.sh.
bash tools/postgres.sh

# cargo-deny (licenses, bans, sources) from crates.io into $CACHE/tools; see tools/cargo-deny.sh.
bash tools/cargo-deny.sh
# cargo-deny reads the crate graph for every platform, offline: download the crates of
# Cargo.lock that a Linux build never fetches (Windows, macOS, Android, wasm). Quick when cached.
cargo fetch --locked --quiet
