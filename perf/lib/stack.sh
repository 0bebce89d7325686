# The stack under load, shared by perf/load and perf/ab: MariaDB and Redis as scripts/serve (or
# DATABASE_URL / REDIS_URL), the release builds, the 1M-row database, and one `product-api serve`
# on a free 127.0.0.1 port with the rate limiter off. Sourced after scripts/lib/services.sh; the
# caller sets `server_log` and may set SERVER_EXTRA_ENV (NAME=value words added to the server's
# environment). Every command run is printed as `+ …` and remembered in `commands`.

commands=()
server_pid=""

# Prints a command line (as `+ …`), remembers it for the end, and runs it.
run() {
    printf '+ %s\n' "$*" >&2
    commands+=("$*")
    "$@"
}

ensure_services() {
    if [[ -z "${DATABASE_URL:-}" ]]; then
        ensure_packages
        start_mariadb
        export DATABASE_URL="mysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$DB_PORT/$DB_NAME"
    else
        log "using DATABASE_URL from the environment"
    fi
    if [[ -z "${REDIS_URL:-}" ]]; then
        ensure_packages
        start_redis
        export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
    else
        log "using REDIS_URL from the environment"
    fi
}

build() {
    run cargo build --quiet --release --bin product-api
    run cargo build --quiet --release -p loadtest
    local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
    [[ "$target_dir" == /* ]] || target_dir="$ROOT/$target_dir"
    server_bin="$target_dir/release/product-api"
    loadtest_bin="$target_dir/release/loadtest"
    [[ -x "$server_bin" && -x "$loadtest_bin" ]] || die "built binaries not found under $target_dir/release"
}

prepare_database() {
    run "$server_bin" migrate
    run "$server_bin" seed --rows "${SEED_ROWS:-1000000}"
}

# A port nothing listens on now. Another process could take it before the server binds; the
# server then fails to start and this script says so.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Secrets for this run only: never written to disk, never printed.
make_secrets() {
    CURSOR_SECRET="${CURSOR_SECRET:-$(head -c 32 /dev/urandom | base64 -w0)}"
    WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 -w0)"
    export CURSOR_SECRET WEBHOOK_SECRET
}

# The MySQL pool for this machine: MariaDB has the same 2 cores as the service and the load
# generator, so more than ~4 queries at once only adds MariaDB threads fighting for them; the
# rest wait their turn in the service's gate (FIFO, bounded by DB_POOL_WAIT_MS) instead of the
# kernel's run queue. Measured (uncached, 32 connections, 20 s): pool 32 → p99 50–70 ms, pool 4
# → ~13 ms at the same throughput (perf/RESULTS.md). The waiting bound must then admit every
# connection of the load (32, or 256 users in mixed) instead of shedding them.
SERVER_DB_POOL_MAX="${SERVER_DB_POOL_MAX:-4}"
SERVER_DB_POOL_MAX_WAITING="${SERVER_DB_POOL_MAX_WAITING:-512}"

start_server() {
    port="$(free_port)"
    host="http://127.0.0.1:$port"
    local settings="HOST=127.0.0.1 PORT=$port RATE_LIMIT_PRESET=off RECONCILE_SIGNATURES=false LOG_FORMAT=json DB_POOL_MIN=$SERVER_DB_POOL_MAX DB_POOL_MAX=$SERVER_DB_POOL_MAX DB_POOL_MAX_WAITING=$SERVER_DB_POOL_MAX_WAITING${SERVER_EXTRA_ENV:+ $SERVER_EXTRA_ENV}"
    log "starting product-api on $host (log: $server_log)"
    printf '+ %s WEBHOOK_SECRET=(generated) %s serve\n' "$settings" "$server_bin" >&2
    commands+=("$settings WEBHOOK_SECRET=(generated) $server_bin serve")
    # shellcheck disable=SC2086 # $settings is NAME=value words, split on purpose
    env $settings "$server_bin" serve >"$server_log" 2>&1 9>&- &
    server_pid=$!
    wait_ready
}

# Polls /ready (bounded): the server is up when it answers 200, dead when its process is gone.
wait_ready() {
    local waited=0
    until curl -fsS -o /dev/null --max-time 2 "$host/ready"; do
        alive "$server_pid" || { tail -n 30 "$server_log" >&2; die "product-api exited during start-up"; }
        ((waited < 300)) || die "product-api not ready within 60 s (log: $server_log)"
        sleep 0.2
        waited=$((waited + 1))
    done
    log "product-api ready (pid $server_pid)"
}

stop_server() {
    [[ -n "$server_pid" ]] || return 0
    if alive "$server_pid"; then
        log "stopping product-api (pid $server_pid)"
        kill -TERM "$server_pid" 2>/dev/null || true
        if ! wait_gone "$server_pid" 30; then
            warn "product-api (pid $server_pid) still running after 30 s; sending SIGKILL"
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
    fi
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# The value of key=… in a loadtest summary line (tab-separated key=value fields; "-" when
# missing).
field() {
    local key="$1" line="$2"
    tr '\t' '\n' <<<"$line" | awk -F= -v key="$key" '$1 == key { print substr($0, length(key) + 2); found = 1 } END { if (!found) print "-" }'
}
