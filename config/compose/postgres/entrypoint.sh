#!/bin/sh
# PostgreSQL for the compose tree: on first start create the cluster in $PGDATA (the named volume) and the
# database POSTGRES_DB, then run the server in the foreground (PID 1, so `docker stop` shuts it down cleanly).
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP clients (default scram-sha-256, which needs POSTGRES_PASSWORD;
#                              trust only where no one but the tree's own containers reaches the port)
#   POSTGRES_PASSWORD          the postgres user's password;  POSTGRES_DB  the database to create
#   PGPORT, POSTGRES_LISTEN_ADDRESSES  where the server listens (default 5432 on every address of the container)
set -eu
bin=/usr/lib/postgresql/15/bin
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ "$auth" != trust ] && [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "supnet-postgres: POSTGRES_PASSWORD is empty but POSTGRES_HOST_AUTH_METHOD is $auth: set a password" \
            "(or POSTGRES_HOST_AUTH_METHOD=trust where only the tree's containers reach the port)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    "$bin/initdb" --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="$auth" ${POSTGRES_PASSWORD:+--pwfile="$pwfile"} >/dev/null
    rm -f "$pwfile"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
    if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\"" | "$bin/postgres" --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "supnet-postgres: cluster created in $PGDATA${POSTGRES_DB:+, database $POSTGRES_DB}" >&2
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN_ADDRESSES:-*}" -p "$PGPORT"
