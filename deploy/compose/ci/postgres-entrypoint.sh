#!/bin/bash
# The official postgres image's start-up, as far as compose.yaml uses it: on an empty PGDATA,
# initdb with POSTGRES_USER and its password (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE), then
# POSTGRES_DB; then postgres listening on every address with password (scram) logins.
set -euo pipefail
if [ "${1:-}" != postgres ]; then exec "$@"; fi
shift
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
password=${POSTGRES_PASSWORD:-}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then password=$(<"$POSTGRES_PASSWORD_FILE"); fi
[ -n "$password" ] || { echo "postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2; exit 1; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U "$user" --pwfile=<(printf '%s\n' "$password") --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # A socket-only server for the set-up, so nothing connects before it is done.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
  if [ "$db" != postgres ]; then createdb -h /tmp -U "$user" "$db"; fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres: initialised $PGDATA (user $user, database $db)" >&2
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
