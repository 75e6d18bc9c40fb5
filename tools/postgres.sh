#!/usr/bin/env bash
# Starts the local PostgreSQL and creates the role and database the tests (and a local Grafana)
# use, idempotently. Called by tools/setup.sh, and by the test harness when it cannot connect.
#   role/password/database: $TAXI_PG_USER/$TAXI_PG_PASSWORD/$TAXI_PG_DB (default taxi/taxi/taxi_test)
# Afterwards: postgres://taxi:taxi@127.0.0.1:<port>/taxi_test (port of the first cluster, 5432).
set -euo pipefail
DB_USER="${TAXI_PG_USER:-taxi}"
DB_PASS="${TAXI_PG_PASSWORD:-taxi}"
DB_NAME="${TAXI_PG_DB:-taxi_test}"

# One caller at a time: tests in parallel processes may all try to start the server.
exec 9>"${TMPDIR:-/tmp}/taxi-duration-postgres.lock"
flock 9

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "postgres: installing PostgreSQL (Debian package)"
  apt-get update -qq && apt-get install -y --no-install-recommends postgresql >/dev/null
fi
if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  echo "postgres: creating cluster $version/main"
  pg_createcluster "$version" main >/dev/null
fi
read -r version cluster port status _ < <(pg_lsclusters -h | head -1)
if [ "$status" != "online" ]; then
  echo "postgres: starting cluster $version/$cluster on port $port"
  # The server must not inherit the lock, or it would hold it for its lifetime.
  pg_ctlcluster "$version" "$cluster" start 9>&-
fi

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}
psql_admin() { as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -qAtX "$@"; }

# Password authentication over loopback (scram-sha-256 is Debian's default in pg_hba.conf).
psql_admin -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE \"$DB_USER\" LOGIN PASSWORD '$DB_PASS';
  END IF; END \$\$;"
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\""
fi
echo "postgres: ready at postgres://$DB_USER:***@127.0.0.1:$port/$DB_NAME"
