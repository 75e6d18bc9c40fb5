#!/usr/bin/env bash
# Usage: tools/cargo-deny.sh
# Installs cargo-deny from crates.io into $TAXI_CACHE_DIR/tools (outside the clone), for the
# `deny` step of `cargo xtask ci`. Skipped when that version is already there (a version stamp).
# Builds in its own target directory, removed afterwards, so the workspace's stays untouched
# (measured: about 4.5 minutes on 2 cores).
set -euo pipefail
VERSION=0.20.2 # rust-version 1.88
CACHE="${TAXI_CACHE_DIR:-$HOME/.cache/taxi-duration}"
root="$CACHE/tools"
stamp="$root/.cargo-deny.version"
if [ -x "$root/bin/cargo-deny" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$VERSION" ]; then
  exit 0
fi
mkdir -p "$root"
target="$(mktemp -d "$root/target.XXXXXX")"
trap 'rm -rf "$target"' EXIT
echo "cargo-deny: installing $VERSION into $root (a few minutes, once)" >&2
started=$SECONDS
# From the temporary folder, so the clone's .cargo/config.toml does not apply to the build.
(cd "$target" && CARGO_TARGET_DIR="$target" cargo install --locked --quiet --force \
  cargo-deny --version "=$VERSION" --root "$root")
echo "$VERSION" > "$stamp"
echo "cargo-deny: installed in $((SECONDS - started))s" >&2
