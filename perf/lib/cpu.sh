# CPU time per request of a server under wrk, shared by perf/ceiling, perf/l1-ab and perf/ab.

# cpu_ticks PID: the process's user + system time so far, in clock ticks (/proc/PID/stat).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# wrk_with_cpu PID OUTPUT WRK_ARGS...: one wrk run (its command line on stderr, its output kept in
# the file OUTPUT); prints "req/s cpu-µs-per-request" of the server PID over that run.
wrk_with_cpu() {
    local pid="$1" output="$2" before after
    shift 2
    before="$(cpu_ticks "$pid")"
    echo "+ wrk $*" >&2
    wrk "$@" >"$output"
    after="$(cpu_ticks "$pid")"
    wrk_rate_and_cpu "$output" $((after - before))
}

# wrk_rate_and_cpu WRK_OUTPUT TICKS: "req/s cpu-µs-per-request" of one wrk run whose output is
# in the file WRK_OUTPUT, during which the server spent TICKS clock ticks.
wrk_rate_and_cpu() {
    awk -v ticks="$2" -v hz="$(getconf CLK_TCK)" '
        /requests in/ { requests = $1 }
        /^Requests\/sec:/ { rps = $2 }
        END { printf "%s %.2f\n", rps, ticks / hz * 1e6 / requests }' "$1"
}
