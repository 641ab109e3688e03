#!/usr/bin/env bash
# Make sure a Postgres and a NATS JetStream answer for the tests.
#
# Uses 127.0.0.1:5432 and 127.0.0.1:4222 when they answer; otherwise starts throwaway
# servers on free ports under a temp dir. Prints `export NAME=value` lines on stdout (eval
# them); progress goes to stderr. Throwaway servers keep running until
#   scripts/ensure-services.sh --stop "$SHIPYARD_TEST_SERVICES_DIR"
# (scripts/with-services.sh does both around a command).
# ENSURE_SERVICES_THROWAWAY=1 skips the probes and always starts throwaway servers.
set -euo pipefail

say() { echo "ensure-services: $*" >&2; }

here="$(cd "$(dirname "$0")/.." && pwd)"
python="$here/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"

stop_services() {
    local dir="$1"
    [ -d "$dir" ] || return 0
    if [ -f "$dir/nats.pid" ]; then
        kill "$(cat "$dir/nats.pid")" 2>/dev/null || true
    fi
    if [ -f "$dir/pgdata/postmaster.pid" ]; then
        as_pg "$(pg_bin pg_ctl)" -D "$dir/pgdata" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

free_port() {
    "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Postgres answers on host:port (pg_isready when present, else a bare TCP connect).
pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p "$1" -t 2
    else
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
    fi
}

# NATS greets with an INFO line; JetStream servers say "jetstream":true in it.
nats_js_answers() {
    local line
    line="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -n1 <&3" 2>/dev/null)" || return 1
    [[ "$line" == INFO* && "$line" == *'"jetstream":true'* ]]
}

pg_bin() {
    local found
    found="$(command -v "$1" 2>/dev/null || true)"
    if [ -z "$found" ]; then
        found="$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n1 || true)"
    fi
    echo "$found"
}

# initdb and postgres refuse to run as root: run them as the postgres user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local dir="$1" port initdb pg_ctl
    if [ -z "$(pg_bin initdb)" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing postgresql with apt"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        else
            say "no initdb and cannot install postgresql"; return 1
        fi
    fi
    initdb="$(pg_bin initdb)"; pg_ctl="$(pg_bin pg_ctl)"
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    port="$(free_port)"
    mkdir -p "$dir/pgdata"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pgdata" "$dir"
    as_pg "$initdb" -D "$dir/pgdata" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    cat >>"$dir/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    as_pg "$pg_ctl" -D "$dir/pgdata" -l "$dir/postgres.log" -w -t 30 start >/dev/null \
        || { cat "$dir/postgres.log" >&2; return 1; }
    say "started throwaway Postgres on 127.0.0.1:$port"
    echo "export SHIPYARD_TEST_PG_DSN=postgresql://postgres@127.0.0.1:$port/postgres"
}

start_nats() {
    local dir="$1" port bin
    bin="$("$python" -c 'from services.common.natsbin import nats_server_binary as b; print(b())' 2>/dev/null \
        || command -v nats-server || true)"
    [ -n "$bin" ] || { say "no nats-server (run make install)"; return 1; }
    port="$(free_port)"
    mkdir -p "$dir/jetstream"
    # stdout/stderr to a file: an inherited pipe would keep `$(ensure-services.sh)` waiting.
    setsid "$bin" -a 127.0.0.1 -p "$port" -js -sd "$dir/jetstream" \
        >"$dir/nats.log" 2>&1 </dev/null &
    echo $! >"$dir/nats.pid"
    for _ in $(seq 1 100); do
        nats_js_answers "$port" && break
        sleep 0.1
    done
    nats_js_answers "$port" || { cat "$dir/nats.log" >&2; return 1; }
    say "started throwaway NATS JetStream on 127.0.0.1:$port"
    echo "export SHIPYARD_TEST_NATS_URL=nats://127.0.0.1:$port"
}

main() {
    if [ "${1:-}" = "--stop" ]; then
        stop_services "${2:?usage: ensure-services.sh --stop DIR}"
        return 0
    fi
    local force="${ENSURE_SERVICES_THROWAWAY:-0}" dir=""
    make_dir() {
        if [ -z "$dir" ]; then
            dir="$(mktemp -d /tmp/shipyard-services.XXXXXX)"
            chmod 755 "$dir"
            echo "export SHIPYARD_TEST_SERVICES_DIR=$dir"
        fi
    }
    if [ "$force" != 1 ] && pg_answers 5432; then
        say "Postgres answers on 127.0.0.1:5432"
        echo "export SHIPYARD_TEST_PG_DSN=postgresql://postgres@127.0.0.1:5432/postgres"
    else
        make_dir
        start_postgres "$dir"
    fi
    if [ "$force" != 1 ] && nats_js_answers 4222; then
        say "NATS JetStream answers on 127.0.0.1:4222"
        echo "export SHIPYARD_TEST_NATS_URL=nats://127.0.0.1:4222"
    else
        make_dir
        start_nats "$dir"
    fi
}

main "$@"
