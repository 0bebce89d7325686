#!/usr/bin/env bash
# Shared helpers for scripts/serve, scripts/test and scripts/stop.
#
# Starts a private MariaDB and Redis for this checkout, bound to 127.0.0.1
# only, with all state under "$ROOT/.data/" (git-ignored). No systemd: the
# daemons are started directly and tracked by pid files under .data.
#
# Source it; do not execute it.
#
# Environment:
#   PRODUCT_API_DB_PORT     MariaDB TCP port (default 13306)
#   PRODUCT_API_REDIS_PORT  Redis TCP port   (default 16379); the test Redis
#                           Cluster uses the three ports after it (16380-16382)
#                           and cluster-bus ports 11-13 above it (16390-16392)
#   PRODUCT_API_REPL_PRIMARY_PORT  replication pair: primary port (default DB port + 1)
#   PRODUCT_API_REPLICA_PORT       replication pair: replica port (default DB port + 2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
DATA_DIR="$ROOT/.data"

DB_PORT="${PRODUCT_API_DB_PORT:-13306}"
REDIS_PORT="${PRODUCT_API_REDIS_PORT:-16379}"
# The replication pair (start_replication_pair): a MariaDB primary with a binlog and a read-only
# replica following it, separate from the main server, for the read-replica tests.
REPL_PRIMARY_PORT="${PRODUCT_API_REPL_PRIMARY_PORT:-$((DB_PORT + 1))}"
REPLICA_PORT="${PRODUCT_API_REPLICA_PORT:-$((DB_PORT + 2))}"

MARIADB_DATADIR="$DATA_DIR/mariadb"
MARIADB_CNF="$DATA_DIR/my.cnf"
MARIADB_PID="$DATA_DIR/mariadb.pid"
MARIADB_LOG="$DATA_DIR/mariadb.log"
MARIADB_TMPDIR="$DATA_DIR/tmp"
# Unix socket paths are limited to ~107 bytes; a deep checkout falls back to
# a per-checkout path under /tmp so the server can still start.
MARIADB_SOCKET="$DATA_DIR/mariadb.sock"
if ((${#MARIADB_SOCKET} > 100)); then
    MARIADB_SOCKET="/tmp/product-api-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)-mariadb.sock"
fi

REDIS_DIR="$DATA_DIR/redis"
REDIS_PID="$DATA_DIR/redis.pid"
REDIS_LOG="$DATA_DIR/redis.log"

# The test Redis Cluster: three masters, no replicas. Bus ports are explicit
# (cluster-port) so that two checkouts with different PRODUCT_API_REDIS_PORT
# never share one (the default, port + 10000, could clash with another port).
REDIS_CLUSTER_DIR="$DATA_DIR/redis-cluster"
REDIS_CLUSTER_PORTS=("$((REDIS_PORT + 1))" "$((REDIS_PORT + 2))" "$((REDIS_PORT + 3))")
REDIS_CLUSTER_BUS_PORTS=("$((REDIS_PORT + 11))" "$((REDIS_PORT + 12))" "$((REDIS_PORT + 13))")

# Set by start_mariadb / start_redis / start_redis_cluster: 1 if the service
# was already running.
# shellcheck disable=SC2034  # read by the sourcing scripts
MARIADB_WAS_RUNNING=0
# shellcheck disable=SC2034
REDIS_WAS_RUNNING=0
# Set by start_replication_pair: 1 if both servers of the pair were already running.
# shellcheck disable=SC2034
REPLICATION_PAIR_WAS_RUNNING=0
# Set by start_redis_cluster: 1 if the three nodes were already running.
# shellcheck disable=SC2034
REDIS_CLUSTER_WAS_RUNNING=0

DB_USER="product_api"
DB_PASSWORD="product_api"
DB_NAME="product_api"

# mariadbd and friends live in /usr/sbin, which is not on every PATH.
case ":$PATH:" in
    *:/usr/sbin:*) ;;
    *) PATH="$PATH:/usr/sbin:/sbin" ;;
esac
export PATH

log() {
    printf '==> %s\n' "$*" >&2
}

warn() {
    printf 'warning: %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# Run a command as root: directly when we are root, else via passwordless sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif have sudo; then
        sudo -n "$@"
    else
        die "need root to run: $*"
    fi
}

# Install MariaDB and/or Redis from the Debian mirrors when missing.
ensure_packages() {
    local pkgs=()
    local cmd
    for cmd in mariadbd mariadb mariadb-admin mariadb-install-db; do
        if ! have "$cmd"; then
            pkgs+=(mariadb-server mariadb-client)
            break
        fi
    done
    for cmd in redis-server redis-cli; do
        if ! have "$cmd"; then
            pkgs+=(redis-server redis-tools)
            break
        fi
    done
    if ((${#pkgs[@]} == 0)); then
        return 0
    fi
    log "installing ${pkgs[*]} (apt-get)"
    as_root apt-get update </dev/null
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${pkgs[@]}" </dev/null
    hash -r
    for cmd in mariadbd mariadb mariadb-admin mariadb-install-db redis-server redis-cli; do
        have "$cmd" || die "$cmd still missing after apt-get install"
    done
}

# Whether a process is alive. Zombies count as dead: a daemon killed hard is
# reparented to PID 1, which may take a while to reap it.
alive() {
    local pid="$1" stat
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]] && stat="$(<"/proc/$pid/stat")" 2>/dev/null; then
        stat="${stat##*) }"
        [[ "${stat:0:1}" != [ZX] ]] || return 1
    fi
    return 0
}

# The pid recorded in a pid file, if that process is alive and (when /proc
# tells) is the expected program, not an unrelated process that reused the pid.
live_pid() {
    local file="$1" name="$2" pid comm
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" ]] || return 1
    alive "$pid" || return 1
    if [[ -r "/proc/$pid/comm" ]]; then
        comm="$(<"/proc/$pid/comm")"
        [[ "$comm" == "$name"* ]] || return 1
    fi
    printf '%s\n' "$pid"
}

# Wait (bounded) until a process is gone. Returns 1 on timeout.
wait_gone() {
    local pid="$1" timeout="$2" waited=0
    while alive "$pid"; do
        if ((waited >= timeout * 5)); then
            return 1
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

# Run "$@" holding an exclusive lock on .data/services.lock, so concurrent
# scripts (say serve and test) do not start two servers on one datadir.
# The lock is fd 9; daemons are launched with 9>&- so they do not inherit it.
with_lock() {
    mkdir -p "$DATA_DIR"
    exec 9>>"$DATA_DIR/services.lock"
    if ! flock -w 300 9; then
        die "timed out waiting for $DATA_DIR/services.lock"
    fi
    "$@"
    exec 9>&-
}

# ---------------------------------------------------------------- MariaDB

# Admin client for our server: root over the private socket. The defaults
# file must come first and keeps the clients away from /etc/mysql's socket.
mariadb_root() {
    mariadb --defaults-file="$MARIADB_CNF" "$@"
}

mariadb_ping() {
    [[ -f "$MARIADB_CNF" ]] || return 1
    mariadb-admin --defaults-file="$MARIADB_CNF" --connect-timeout=2 ping >/dev/null 2>&1
}

write_mariadb_cnf() {
    local user
    user="$(id -un)"
    mkdir -p "$DATA_DIR" "$MARIADB_DATADIR" "$MARIADB_TMPDIR"
    cat >"$MARIADB_CNF.tmp" <<EOF
# Generated by scripts/lib/services.sh; rewritten on every start.
[mysqld]
user                           = $user
datadir                        = $MARIADB_DATADIR
tmpdir                         = $MARIADB_TMPDIR
socket                         = $MARIADB_SOCKET
pid-file                       = $MARIADB_PID
log-error                      = $MARIADB_LOG
port                           = $DB_PORT
bind-address                   = 127.0.0.1
skip-name-resolve
character-set-server           = utf8mb4
collation-server               = utf8mb4_unicode_ci
max_connections                = 500
innodb_buffer_pool_size        = 1G
innodb_log_file_size           = 256M
innodb_flush_log_at_trx_commit = 2
innodb_ft_min_token_size       = 3
# A page is ~21 primary-key lookups through a secondary index: the adaptive hash index turns
# their B-tree descents into hash lookups. Off by default in MariaDB 10.6+ and MySQL 8.4;
# measured here (perf/ab uncached, 32 users): +8–10 % throughput (perf/RESULTS.md).
innodb_adaptive_hash_index     = ON
# Extra [mysqld] lines for this start only (perf/ab's A_CNF / B_CNF); none by default.
${MARIADB_EXTRA_CNF:-}

[client]
user                           = root
socket                         = $MARIADB_SOCKET
default-character-set          = utf8mb4
EOF
    mv "$MARIADB_CNF.tmp" "$MARIADB_CNF"
}

init_mariadb_datadir() {
    log "initialising MariaDB datadir $MARIADB_DATADIR"
    # --user is needed when running as root (mariadbd refuses root otherwise);
    # "normal" auth gives root@localhost an empty password, reachable only
    # through the private socket since TCP is loopback-only.
    if ! mariadb-install-db \
        --defaults-file="$MARIADB_CNF" \
        --user="$(id -un)" \
        --datadir="$MARIADB_DATADIR" \
        --auth-root-authentication-method=normal \
        --skip-test-db \
        >"$DATA_DIR/mariadb-install-db.log" 2>&1; then
        tail -n 40 "$DATA_DIR/mariadb-install-db.log" >&2 || true
        die "mariadb-install-db failed (full log: $DATA_DIR/mariadb-install-db.log)"
    fi
}

# Create the application user and database (idempotent).
provision_mariadb() {
    mariadb_root --batch <<EOF
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
FLUSH PRIVILEGES;
EOF
}

# Waits until a mariadbd just started answers: wait_mariadbd_started PID LOG NAME TIMEOUT PING...
# (PING... is the command that succeeds once it answers). Dies with the log's tail when the
# process exits first or TIMEOUT seconds pass (killing it then).
wait_mariadbd_started() {
    local pid="$1" log="$2" name="$3" timeout="$4" waited=0
    shift 4
    until "$@"; do
        if ! alive "$pid"; then
            tail -n 40 "$log" >&2 || true
            die "$name (mariadbd) exited during start-up (log: $log)"
        fi
        if ((waited >= timeout * 2)); then
            tail -n 40 "$log" >&2 || true
            kill "$pid" 2>/dev/null || true
            die "$name did not answer within ${timeout}s (log: $log)"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

# Start MariaDB on 127.0.0.1:$DB_PORT unless ours is already running.
# Sets MARIADB_WAS_RUNNING=1 when it was, 0 when this call started it.
start_mariadb() {
    with_lock _start_mariadb
}

_start_mariadb() {
    MARIADB_WAS_RUNNING=0
    local pid waited=0 timeout=60
    if pid="$(live_pid "$MARIADB_PID" mariadbd)"; then
        # Ours is running; it may still be starting up (crash recovery).
        until mariadb_ping; do
            if ((waited >= timeout * 2)); then
                tail -n 40 "$MARIADB_LOG" >&2 || true
                die "MariaDB pid $pid (from $MARIADB_PID) is alive but not answering; run scripts/stop"
            fi
            sleep 0.5
            waited=$((waited + 1))
        done
        # shellcheck disable=SC2034
        MARIADB_WAS_RUNNING=1
        log "MariaDB already running on 127.0.0.1:$DB_PORT (pid $pid)"
        provision_mariadb
        return 0
    fi
    rm -f "$MARIADB_PID"

    log "starting MariaDB on 127.0.0.1:$DB_PORT (data: $MARIADB_DATADIR)"
    write_mariadb_cnf
    if [[ ! -d "$MARIADB_DATADIR/mysql" ]]; then
        init_mariadb_datadir
    fi
    # A stale socket from a crash would make the client talk to nothing.
    rm -f "$MARIADB_SOCKET" "$MARIADB_SOCKET.lock"

    # setsid: own session, so Ctrl-C on `scripts/serve` does not reach it.
    # (A background job of a non-interactive shell is no group leader, so
    # setsid does not fork and $! is mariadbd's pid.)
    nohup setsid mariadbd --defaults-file="$MARIADB_CNF" --user="$(id -un)" \
        </dev/null >>"$MARIADB_LOG" 2>&1 9>&- &
    pid=$!
    wait_mariadbd_started "$pid" "$MARIADB_LOG" MariaDB "$timeout" mariadb_ping
    provision_mariadb
    log "MariaDB ready (pid $(live_pid "$MARIADB_PID" mariadbd || echo "$pid"))"
}

stop_mariadb() {
    with_lock _stop_mariadb
}

_stop_mariadb() {
    local pid
    if ! pid="$(live_pid "$MARIADB_PID" mariadbd)"; then
        rm -f "$MARIADB_PID"
        return 0
    fi
    log "stopping MariaDB (pid $pid)"
    if ! mariadb-admin --defaults-file="$MARIADB_CNF" --connect-timeout=5 shutdown >/dev/null 2>&1; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if ! wait_gone "$pid" 120; then
        warn "MariaDB (pid $pid) still running after 120s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "could not stop MariaDB (pid $pid)"
    fi
    rm -f "$MARIADB_PID"
}

# ------------------------------------------------------------------ Redis

redis_ping() {
    [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
}

# Start Redis on 127.0.0.1:$REDIS_PORT unless ours is already running.
# Sets REDIS_WAS_RUNNING=1 when it was, 0 when this call started it.
start_redis() {
    with_lock _start_redis
}

_start_redis() {
    REDIS_WAS_RUNNING=0
    local pid waited=0 timeout=30
    if pid="$(live_pid "$REDIS_PID" redis-server)"; then
        until redis_ping; do
            if ((waited >= timeout * 5)); then
                tail -n 40 "$REDIS_LOG" >&2 || true
                die "Redis pid $pid (from $REDIS_PID) is alive but not answering; run scripts/stop"
            fi
            sleep 0.2
            waited=$((waited + 1))
        done
        # shellcheck disable=SC2034
        REDIS_WAS_RUNNING=1
        log "Redis already running on 127.0.0.1:$REDIS_PORT (pid $pid)"
        return 0
    fi
    rm -f "$REDIS_PID"

    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    mkdir -p "$REDIS_DIR"
    # No config file: only these settings apply (/etc/redis is not read).
    if ! redis-server \
        --port "$REDIS_PORT" \
        --bind 127.0.0.1 \
        --dir "$REDIS_DIR" \
        --daemonize yes \
        --pidfile "$REDIS_PID" \
        --logfile "$REDIS_LOG" \
        --save "" \
        --appendonly no \
        </dev/null 9>&-; then
        tail -n 40 "$REDIS_LOG" >&2 || true
        die "redis-server failed to start (log: $REDIS_LOG)"
    fi

    until redis_ping; do
        if ((waited >= timeout * 5)); then
            tail -n 40 "$REDIS_LOG" >&2 || true
            die "Redis did not answer within ${timeout}s (log: $REDIS_LOG)"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    log "Redis ready (pid $(live_pid "$REDIS_PID" redis-server || echo '?'))"
}

stop_redis() {
    with_lock _stop_redis
}

_stop_redis() {
    stop_redis_server "$REDIS_PID" "$REDIS_PORT" Redis
}

# Stop the redis-server of pid file $1 listening on port $2 ($3 names it in
# messages): SHUTDOWN NOSAVE, else SIGTERM, else after 30 s SIGKILL.
stop_redis_server() {
    local pid_file="$1" port="$2" name="$3" pid
    if ! pid="$(live_pid "$pid_file" redis-server)"; then
        rm -f "$pid_file"
        return 0
    fi
    log "stopping $name (pid $pid)"
    if ! timeout 10 redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if ! wait_gone "$pid" 30; then
        warn "$name (pid $pid) still running after 30s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "could not stop $name (pid $pid)"
    fi
    rm -f "$pid_file"
}

# ---------------------------------------------------------- Redis Cluster

# The seed URLs of the test cluster, comma-separated (REDIS_CLUSTER_URLS form).
redis_cluster_urls() {
    local port urls=()
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        urls+=("redis://127.0.0.1:$port/")
    done
    (IFS=,; printf '%s\n' "${urls[*]}")
}

redis_cluster_ok() {
    local port
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        timeout 3 redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null |
            grep -q '^cluster_state:ok' || return 1
    done
}

# Start a three-master Redis Cluster on 127.0.0.1 ports $REDIS_PORT+1..+3
# unless ours is already running and healthy. Always a new, empty cluster:
# a node left over from an earlier run is stopped and its state removed.
# Sets REDIS_CLUSTER_WAS_RUNNING=1 when it was, 0 when this call started it.
start_redis_cluster() {
    with_lock _start_redis_cluster
}

_start_redis_cluster() {
    REDIS_CLUSTER_WAS_RUNNING=0
    local i port dir pid waited=0 timeout=30 running=0 nodes=()
    for i in 0 1 2; do
        if live_pid "$REDIS_CLUSTER_DIR/node-$i/redis.pid" redis-server >/dev/null; then
            running=$((running + 1))
        fi
    done
    if ((running == 3)) && redis_cluster_ok; then
        # shellcheck disable=SC2034
        REDIS_CLUSTER_WAS_RUNNING=1
        log "Redis Cluster already running on 127.0.0.1:${REDIS_CLUSTER_PORTS[0]}-${REDIS_CLUSTER_PORTS[2]}"
        return 0
    fi
    _stop_redis_cluster
    rm -rf "$REDIS_CLUSTER_DIR"

    log "starting Redis Cluster on 127.0.0.1:${REDIS_CLUSTER_PORTS[0]}-${REDIS_CLUSTER_PORTS[2]} (bus ${REDIS_CLUSTER_BUS_PORTS[0]}-${REDIS_CLUSTER_BUS_PORTS[2]})"
    for i in 0 1 2; do
        port="${REDIS_CLUSTER_PORTS[$i]}"
        dir="$REDIS_CLUSTER_DIR/node-$i"
        mkdir -p "$dir"
        if ! redis-server \
            --port "$port" \
            --bind 127.0.0.1 \
            --dir "$dir" \
            --daemonize yes \
            --pidfile "$dir/redis.pid" \
            --logfile "$dir/redis.log" \
            --save "" \
            --appendonly no \
            --cluster-enabled yes \
            --cluster-config-file "$dir/nodes.conf" \
            --cluster-port "${REDIS_CLUSTER_BUS_PORTS[$i]}" \
            --cluster-node-timeout 5000 \
            </dev/null 9>&-; then
            tail -n 40 "$dir/redis.log" >&2 || true
            die "redis-server (cluster node $i) failed to start (log: $dir/redis.log)"
        fi
        nodes+=("127.0.0.1:$port")
    done
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        waited=0
        until [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]; do
            if ((waited >= timeout * 5)); then
                die "Redis Cluster node on port $port did not answer within ${timeout}s (logs: $REDIS_CLUSTER_DIR)"
            fi
            sleep 0.2
            waited=$((waited + 1))
        done
    done
    if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
        </dev/null >"$REDIS_CLUSTER_DIR/create.log" 2>&1; then
        tail -n 40 "$REDIS_CLUSTER_DIR/create.log" >&2 || true
        die "redis-cli --cluster create failed (log: $REDIS_CLUSTER_DIR/create.log)"
    fi
    waited=0
    until redis_cluster_ok; do
        if ((waited >= timeout * 5)); then
            for port in "${REDIS_CLUSTER_PORTS[@]}"; do
                redis-cli -h 127.0.0.1 -p "$port" cluster info 2>&1 | grep cluster_state >&2 || true
            done
            die "Redis Cluster did not reach cluster_state:ok within ${timeout}s"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    pid="$(live_pid "$REDIS_CLUSTER_DIR/node-0/redis.pid" redis-server || echo '?')"
    log "Redis Cluster ready (first node pid $pid)"
}

stop_redis_cluster() {
    with_lock _stop_redis_cluster
}

_stop_redis_cluster() {
    local i
    for i in 0 1 2; do
        stop_redis_server "$REDIS_CLUSTER_DIR/node-$i/redis.pid" "${REDIS_CLUSTER_PORTS[$i]}" \
            "Redis Cluster node on port ${REDIS_CLUSTER_PORTS[$i]}"
    done
}

# --------------------------------------------------------------- Together

# Stop whatever these scripts started (tracked by the pid files under .data).
stop_services() {
    stop_redis_cluster
    stop_redis
    stop_mariadb
    stop_replication_pair
}

# ------------------------------------------------------- Replication pair
#
# Two more MariaDB servers, both on 127.0.0.1: "repl-primary" (server_id 1, ROW binlog) on
# $REPL_PRIMARY_PORT and "replica" (server_id 2, read_only) on $REPLICA_PORT, following the
# primary by GTID. Each has its own datadir, socket, pid file and log under .data/. The app
# user ($DB_USER) is created on the primary and reaches the replica through replication; it
# may do anything except write past read_only on the replica (no READ_ONLY ADMIN), so a write
# sent to the replica by mistake fails as it would in production. The tests create their
# databases on the primary; the replica receives them.

REPL_USER="product_api_repl"
REPL_PASSWORD="product_api_repl"

# Path of one of a pair node's files: repl_path NODE suffix (NODE: repl-primary | replica).
repl_path() {
    printf '%s\n' "$DATA_DIR/$1$2"
}

repl_socket() {
    local socket
    socket="$(repl_path "$1" .sock)"
    if ((${#socket} > 100)); then
        socket="/tmp/product-api-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)-$1.sock"
    fi
    printf '%s\n' "$socket"
}

# Admin client for a pair node: repl_root NODE [mariadb args...]
repl_root() {
    local node="$1"
    shift
    mariadb --defaults-file="$(repl_path "$node" .cnf)" "$@"
}

repl_ping() {
    [[ -f "$(repl_path "$1" .cnf)" ]] || return 1
    mariadb-admin --defaults-file="$(repl_path "$1" .cnf)" --connect-timeout=2 ping >/dev/null 2>&1
}

# write_repl_cnf NODE PORT SERVER_ID
write_repl_cnf() {
    local node="$1" port="$2" server_id="$3" cnf datadir role
    cnf="$(repl_path "$node" .cnf)"
    datadir="$(repl_path "$node" "")"
    mkdir -p "$datadir" "$(repl_path "$node" -tmp)"
    if [[ "$node" == repl-primary ]]; then
        role="log_bin                        = $datadir/binlog
binlog_format                  = ROW"
    else
        role="read_only                      = 1
relay_log                      = $datadir/relay"
    fi
    cat >"$cnf.tmp" <<CNF
# Generated by scripts/lib/services.sh; rewritten on every start.
[mysqld]
user                           = $(id -un)
datadir                        = $datadir
tmpdir                         = $(repl_path "$node" -tmp)
socket                         = $(repl_socket "$node")
pid-file                       = $(repl_path "$node" .pid)
log-error                      = $(repl_path "$node" .log)
port                           = $port
bind-address                   = 127.0.0.1
skip-name-resolve
server_id                      = $server_id
$role
character-set-server           = utf8mb4
collation-server               = utf8mb4_unicode_ci
max_connections                = 300
innodb_buffer_pool_size        = 128M
innodb_log_file_size           = 48M
innodb_flush_log_at_trx_commit = 2
innodb_ft_min_token_size       = 3

[client]
user                           = root
socket                         = $(repl_socket "$node")
default-character-set          = utf8mb4
CNF
    mv "$cnf.tmp" "$cnf"
}

# Starts one node from its cnf (datadir initialised first when new); waits until it answers.
start_repl_node() {
    local node="$1" pid timeout=60 log
    log="$(repl_path "$node" .log)"
    if [[ ! -d "$(repl_path "$node" "")/mysql" ]]; then
        log "initialising MariaDB datadir $(repl_path "$node" "")"
        if ! mariadb-install-db \
            --defaults-file="$(repl_path "$node" .cnf)" \
            --user="$(id -un)" \
            --datadir="$(repl_path "$node" "")" \
            --auth-root-authentication-method=normal \
            --skip-test-db \
            >"$(repl_path "$node" -install-db.log)" 2>&1; then
            tail -n 40 "$(repl_path "$node" -install-db.log)" >&2 || true
            die "mariadb-install-db failed for $node"
        fi
    fi
    rm -f "$(repl_socket "$node")" "$(repl_socket "$node").lock"
    nohup setsid mariadbd --defaults-file="$(repl_path "$node" .cnf)" --user="$(id -un)" \
        </dev/null >>"$log" 2>&1 9>&- &
    pid=$!
    wait_mariadbd_started "$pid" "$log" "MariaDB $node" "$timeout" repl_ping "$node"
}

# Start the pair unless both are running; (re)configure replication on a new pair and make sure
# it runs. Sets REPLICATION_PAIR_WAS_RUNNING=1 when both were already running.
start_replication_pair() {
    with_lock _start_replication_pair
}

_start_replication_pair() {
    REPLICATION_PAIR_WAS_RUNNING=0
    local fresh=0 node running=0 host
    for node in repl-primary replica; do
        if live_pid "$(repl_path "$node" .pid)" mariadbd >/dev/null && repl_ping "$node"; then
            running=$((running + 1))
        fi
    done
    if ((running == 2)); then
        # shellcheck disable=SC2034
        REPLICATION_PAIR_WAS_RUNNING=1
        log "replication pair already running on 127.0.0.1:$REPL_PRIMARY_PORT -> :$REPLICA_PORT"
    else
        _stop_replication_pair
        # A pair is only usable whole: one datadir without the other starts over.
        if [[ ! -d "$(repl_path repl-primary "")/mysql" || ! -d "$(repl_path replica "")/mysql" ]]; then
            rm -rf "$(repl_path repl-primary "")" "$(repl_path replica "")"
            fresh=1
        fi
        log "starting replication pair: primary 127.0.0.1:$REPL_PRIMARY_PORT, replica 127.0.0.1:$REPLICA_PORT"
        write_repl_cnf repl-primary "$REPL_PRIMARY_PORT" 1
        write_repl_cnf replica "$REPLICA_PORT" 2
        start_repl_node repl-primary
        start_repl_node replica
    fi
    if ((fresh)); then
        # The replication account is made on the primary only (not logged); the replica then
        # starts from an empty binlog, so everything after this point replicates.
        repl_root repl-primary --batch <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '$REPL_USER'@'127.0.0.1' IDENTIFIED BY '$REPL_PASSWORD';
GRANT REPLICATION SLAVE ON *.* TO '$REPL_USER'@'127.0.0.1';
SET SESSION sql_log_bin = 1;
RESET MASTER;
SQL
        repl_root replica --batch <<SQL
STOP SLAVE;
RESET SLAVE ALL;
SET GLOBAL gtid_slave_pos = '';
CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $REPL_PRIMARY_PORT,
    MASTER_USER = '$REPL_USER', MASTER_PASSWORD = '$REPL_PASSWORD',
    MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos;
SQL
    fi
    # A test interrupted while replication was paused leaves it paused: start both threads.
    repl_root replica --batch -e "START SLAVE" 2>/dev/null || true
    # The app user is made on the primary and replicates (idempotent). Also @localhost, like the
    # main server's: mysql_async clients move loopback TCP to the Unix socket unless told not to.
    for host in 127.0.0.1 localhost; do
        repl_root repl-primary --batch <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'$host' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER '$DB_USER'@'$host' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'$host' WITH GRANT OPTION;
REVOKE READ_ONLY ADMIN ON *.* FROM '$DB_USER'@'$host';
SQL
    done
    wait_replica_caught_up 60
    log "replication pair ready"
}

# Waits (bounded) until the replica runs both threads and has applied the primary's binlog.
wait_replica_caught_up() {
    local timeout="$1" waited=0 target
    target="$(repl_root repl-primary --batch --skip-column-names -e "SELECT @@gtid_binlog_pos")"
    until [[ "$(repl_root replica --batch --skip-column-names \
        -e "SELECT MASTER_GTID_WAIT('$target', 1)" 2>/dev/null)" == 0 ]]; do
        if ((waited >= timeout)); then
            repl_root replica --vertical -e "SHOW SLAVE STATUS" >&2 || true
            die "the replica did not catch up with the primary within ${timeout}s"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

stop_replication_pair() {
    with_lock _stop_replication_pair
}

_stop_replication_pair() {
    local node pid
    for node in replica repl-primary; do
        if ! pid="$(live_pid "$(repl_path "$node" .pid)" mariadbd)"; then
            rm -f "$(repl_path "$node" .pid)"
            continue
        fi
        log "stopping MariaDB $node (pid $pid)"
        if ! mariadb-admin --defaults-file="$(repl_path "$node" .cnf)" --connect-timeout=5 \
            shutdown >/dev/null 2>&1; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
        if ! wait_gone "$pid" 120; then
            warn "MariaDB $node (pid $pid) still running after 120s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || die "could not stop MariaDB $node (pid $pid)"
        fi
        rm -f "$(repl_path "$node" .pid)"
    done
}
