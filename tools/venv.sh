#!/usr/bin/env bash
# Usage: tools/venv.sh NAME [REQUIREMENTS]
# Creates (or reuses) the Python venv $TAXI_CACHE_DIR/venvs/NAME from REQUIREMENTS
# (default tools/requirements-NAME.txt).
# A venv is rebuilt only when its requirements file changed (a sha256 stamp inside the venv).
# Shared by tools/setup.sh and `cargo xtask local up` (which installs moto on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: tools/venv.sh NAME [REQUIREMENTS] (default tools/requirements-NAME.txt)}"
req="${2:-tools/requirements-$name.txt}"
[ -f "$req" ] || { echo "venv: $req not found" >&2; exit 2; }
CACHE="${TAXI_CACHE_DIR:-$HOME/.cache/taxi-duration}"
dir="$CACHE/venvs/$name"
stamp="$dir/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
mkdir -p "$CACHE/venvs"
echo "venv: creating $dir from $req" >&2
rm -rf "$dir"
python3 -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
