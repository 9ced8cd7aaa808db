#!/usr/bin/env bash
# Make sure a PostgreSQL server for the tests answers and has the test database.
#
# Settings (the same ones tests/conftest.py reads):
#   POLKU_TEST_PG_HOST  default 127.0.0.1
#   POLKU_TEST_PG_PORT  default 5432
#   POLKU_TEST_PG_USER  default postgres   (connects without a password: trust auth)
#   POLKU_TEST_PG_DB    default polku_test
#
# 1. A server answers at host:port: create the database if it is missing, exit 0.
# 2. None answers, the host is this machine (127.0.0.1/localhost) and we are root (or have
#    passwordless sudo) on Debian: install the `postgresql` package if needed, start its
#    cluster with pg_ctlcluster, allow trust auth for TCP connections from 127.0.0.1 and ::1
#    in that cluster's pg_hba.conf, create the user if missing and the database, exit 0.
# 3. Otherwise print the reason; exit 1 when CI=true, else exit 0 (the PostgreSQL tests
#    then skip with a reason).
#
# POLKU_TEST_PG_CLUSTER (default main) names the Debian cluster to start; it exists so the
# script itself can be tried against a scratch cluster.
set -uo pipefail

HOST=${POLKU_TEST_PG_HOST:-127.0.0.1}
PORT=${POLKU_TEST_PG_PORT:-5432}
PGUSER_=${POLKU_TEST_PG_USER:-postgres}
DB=${POLKU_TEST_PG_DB:-polku_test}
CLUSTER=${POLKU_TEST_PG_CLUSTER:-main}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV_PY="$REPO_ROOT/.venv/bin/python"
HBA_MARK="# added by polku scripts/ensure-postgres.sh: trust local TCP connections"

say() { echo "ensure-postgres: $*" >&2; }

give_up() {
    say "$*"
    if [ "${CI:-}" = "true" ]; then
        say "CI=true: failing, because the PostgreSQL tests must run in CI."
        exit 1
    fi
    say "continuing without PostgreSQL; the PostgreSQL tests will be skipped."
    exit 0
}

have() { command -v "$1" >/dev/null 2>&1; }

venv_has_psycopg() { [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import psycopg' >/dev/null 2>&1; }

# Does a PostgreSQL server answer at HOST:PORT?
server_answers() {
    if have pg_isready; then
        pg_isready -q -h "$HOST" -p "$PORT" -t 3
        return
    fi
    if venv_has_psycopg && "$VENV_PY" - "$HOST" "$PORT" "$PGUSER_" >/dev/null 2>&1 <<'PY'
import sys, psycopg
psycopg.connect(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3],
                dbname="postgres", connect_timeout=3).close()
PY
    then
        return 0
    fi
    timeout 3 bash -c "</dev/tcp/$HOST/$PORT" >/dev/null 2>&1
}

wait_for_server() {
    local i
    for i in $(seq 1 30); do
        server_answers && return 0
        sleep 1
    done
    return 1
}

# Create DB over TCP as PGUSER_ unless it exists. Prints the error and returns 1 on failure.
ensure_database() {
    if have psql; then
        local exists out
        exists=$(psql -X -w -At -h "$HOST" -p "$PORT" -U "$PGUSER_" -d postgres \
            -c "SELECT 1 FROM pg_database WHERE datname = '$DB'" 2>&1) || { echo "$exists" >&2; return 1; }
        [ "$exists" = "1" ] && return 0
        if out=$(psql -X -w -q -h "$HOST" -p "$PORT" -U "$PGUSER_" -d postgres \
                -c "CREATE DATABASE \"$DB\"" 2>&1); then
            say "created database $DB"
            return 0
        fi
        case "$out" in *"already exists"*) return 0 ;; esac
        echo "$out" >&2
        return 1
    fi
    if venv_has_psycopg; then
        "$VENV_PY" - "$HOST" "$PORT" "$PGUSER_" "$DB" <<'PY'
import sys, psycopg
from psycopg import sql
host, port, user, db = sys.argv[1:5]
with psycopg.connect(host=host, port=int(port), user=user, dbname="postgres",
                     connect_timeout=5, autocommit=True) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
        sys.exit(0)
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        print(f"ensure-postgres: created database {db}", file=sys.stderr)
    except psycopg.errors.DuplicateDatabase:
        pass
PY
        return
    fi
    echo "neither psql nor psycopg (in .venv) is available to create the database" >&2
    return 1
}

# --- 1. a server answers -------------------------------------------------------------
if server_answers; then
    if ensure_database; then
        exit 0
    fi
    give_up "a PostgreSQL server answers at $HOST:$PORT, but database '$DB' could not be made ready as user '$PGUSER_' (see the error above). The tests connect without a password: allow trust auth for that user from this host in pg_hba.conf, or set POLKU_TEST_PG_* to a server that does."
fi

# --- 2. provision a local server ------------------------------------------------------
case "$HOST" in
    127.0.0.1|localhost|::1) ;;
    *) give_up "no PostgreSQL server answers at $HOST:$PORT, and it is not this machine, so there is nothing to install here." ;;
esac

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
    as_postgres() { (cd / && runuser -u postgres -- "$@"); }
elif have sudo && sudo -n true 2>/dev/null; then
    as_root() { sudo -n "$@"; }
    as_postgres() { (cd / && sudo -n -u postgres "$@"); }
else
    give_up "no PostgreSQL server answers at $HOST:$PORT, and this user can neither act as root nor use passwordless sudo to install and start one. Start one (trust auth for '$PGUSER_' over TCP from 127.0.0.1) or set POLKU_TEST_PG_HOST/PORT/USER."
fi

if ! have pg_ctlcluster; then
    have apt-get || give_up "no PostgreSQL server answers at $HOST:$PORT and apt-get is not available to install one."
    say "no PostgreSQL server answers at $HOST:$PORT: installing the Debian package postgresql (this can take a minute)"
    export DEBIAN_FRONTEND=noninteractive
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q \
        || give_up "apt-get update failed."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql \
        || give_up "apt-get install postgresql failed."
    have pg_ctlcluster || give_up "installed postgresql, but pg_ctlcluster is still missing."
fi

# The newest version that has the cluster, else the newest installed server.
VERSION=""
for v in $(ls /etc/postgresql 2>/dev/null | sort -V); do
    [ -d "/etc/postgresql/$v/$CLUSTER" ] && VERSION=$v
done
if [ -z "$VERSION" ]; then
    VERSION=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$VERSION" ] || give_up "postgresql is installed but no server version was found under /usr/lib/postgresql."
    say "creating cluster $VERSION/$CLUSTER on port $PORT"
    as_root pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" >&2 \
        || give_up "pg_createcluster $VERSION $CLUSTER failed."
fi
CONF_DIR=/etc/postgresql/$VERSION/$CLUSTER
HBA=$CONF_DIR/pg_hba.conf

CLUSTER_PORT=$(as_root pg_conftool -s "$VERSION" "$CLUSTER" show port 2>/dev/null || echo 5432)
if [ "$CLUSTER_PORT" != "$PORT" ]; then
    give_up "PostgreSQL cluster $VERSION/$CLUSTER is configured for port $CLUSTER_PORT, not $PORT; not reconfiguring it. Set POLKU_TEST_PG_PORT=$CLUSTER_PORT or change its port."
fi

# Trust TCP connections from this machine; first matching line wins, so put them first.
if ! as_root grep -qF "$HBA_MARK" "$HBA"; then
    say "allowing trust auth for TCP connections from 127.0.0.1 and ::1 in $HBA"
    as_root sed -i "1i $HBA_MARK\nhost    all    all    127.0.0.1/32    trust\nhost    all    all    ::1/128         trust" "$HBA" \
        || give_up "could not edit $HBA."
fi

if as_root pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" reload >&2 \
        || give_up "could not reload PostgreSQL cluster $VERSION/$CLUSTER."
else
    say "starting PostgreSQL cluster $VERSION/$CLUSTER"
    as_root pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" start >&2 \
        || give_up "could not start PostgreSQL cluster $VERSION/$CLUSTER (see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log)."
fi

wait_for_server || give_up "started PostgreSQL cluster $VERSION/$CLUSTER, but nothing answers at $HOST:$PORT (listen_addresses in $CONF_DIR/postgresql.conf must include localhost)."

# The test user, as a superuser (the tests create schemas), via the local socket as postgres.
if [ "$PGUSER_" != "postgres" ]; then
    has_role=$(as_postgres psql -X -At -p "$PORT" -d postgres \
        -c "SELECT 1 FROM pg_roles WHERE rolname = '$PGUSER_'" 2>/dev/null)
    if [ "$has_role" != "1" ]; then
        as_postgres psql -X -q -p "$PORT" -d postgres -c "CREATE ROLE \"$PGUSER_\" LOGIN SUPERUSER" >&2 \
            || give_up "could not create PostgreSQL role '$PGUSER_'."
    fi
fi

ensure_database || give_up "PostgreSQL is running at $HOST:$PORT, but database '$DB' could not be created as user '$PGUSER_'."
say "PostgreSQL ready at $HOST:$PORT, database $DB"
exit 0
