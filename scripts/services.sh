#!/usr/bin/env bash
# Make sure PostgreSQL, MariaDB and Redis answer on 127.0.0.1:5432 / :3306 / :6379; start
# throwaway ones if not.
# Installs the server packages with apt-get when the binaries are missing (a fresh machine).
set -euo pipefail

PG_PORT="${LIFECYCLE_TEST_PG_PORT:-5432}"
REDIS_PORT="${LIFECYCLE_TEST_REDIS_PORT:-6379}"
MYSQL_PORT="${LIFECYCLE_TEST_MYSQL_PORT:-3306}"
# Under /tmp, not $TMPDIR: the postgres user must be able to traverse every parent directory.
STATE="${LIFECYCLE_SERVICES_DIR:-/tmp/lifecycle-services}"
mkdir -p "$STATE"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_pkgs=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
if ! listening "$MYSQL_PORT"; then
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
fi
if ((${#need_pkgs[@]})); then
  echo "services: installing ${need_pkgs[*]} with apt-get" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! listening "$PG_PORT"; then
  PGBIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
  DATA="$STATE/pgdata"
  # PostgreSQL refuses to run as root, so a root user runs it as the postgres user.
  RUN=(); if [ "$(id -u)" = 0 ]; then RUN=(runuser -u postgres --); chown -R postgres "$STATE"; fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    "${RUN[@]}" "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  "${RUN[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$STATE/pg.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $STATE -c max_connections=300" start >/dev/null
  echo "services: started PostgreSQL on 127.0.0.1:$PG_PORT (data in $DATA)" >&2
fi

if ! listening "$REDIS_PORT"; then
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$STATE" --logfile "$STATE/redis.log"
  for _ in $(seq 50); do listening "$REDIS_PORT" && break; sleep 0.1; done
  echo "services: started Redis on 127.0.0.1:$REDIS_PORT" >&2
fi

if ! listening "$MYSQL_PORT"; then
  MYSQLD="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
  INSTALL_DB="$(command -v mariadb-install-db || command -v mysql_install_db)"
  DATA="$STATE/mariadb"
  # mariadbd refuses to run as root unless told to run as another user: it runs as mysql.
  MUSER="$(id -un)"; if [ "$(id -u)" = 0 ]; then MUSER=mysql; fi
  mkdir -p "$DATA"; [ "$(id -u)" = 0 ] && chown -R mysql "$DATA"
  if [ ! -d "$DATA/mysql" ]; then
    # root@localhost authenticates without a password (a throwaway test server only).
    "$INSTALL_DB" --user="$MUSER" --datadir="$DATA" --auth-root-authentication-method=normal \
      --skip-test-db >"$STATE/mariadb-install.log" 2>&1
  fi
  setsid "$MYSQLD" --no-defaults --user="$MUSER" --datadir="$DATA" --bind-address=127.0.0.1 \
    --port="$MYSQL_PORT" --socket="$DATA/mariadb.sock" --pid-file="$DATA/mariadb.pid" \
    --log-error="$DATA/mariadb.log" --max-connections=300 \
    --innodb-buffer-pool-size=128M >/dev/null 2>&1 &
  for _ in $(seq 100); do listening "$MYSQL_PORT" && break; sleep 0.2; done
  listening "$MYSQL_PORT" || { echo "services: MariaDB did not start, see $DATA/mariadb.log" >&2; exit 1; }
  echo "services: started MariaDB on 127.0.0.1:$MYSQL_PORT (data in $DATA)" >&2
fi
