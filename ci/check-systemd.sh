#!/usr/bin/env bash
# Checks systemd/readerd.service the way an installer would see it:
#   1. copies the unit to a temporary directory and points ExecStart at a real readerd binary;
#   2. `systemd-analyze verify` must print nothing about the unit (any output is a failure);
#   3. `systemd-analyze security --offline=true` must rate the unit at MAX_EXPOSURE or better;
#      the per-mode template readerd@.service gets the same two checks as readerd@test;
#   4. the same binary, started as the unit would start it (`run --config`) against a
#      `readerd sim` emulator, must answer /readyz (200) and /metrics, and exit 0 on SIGTERM.
#
# Usage: ci/check-systemd.sh [PATH_TO_READERD]   (default: target/debug/readerd, built if missing)
# Env:   MAX_EXPOSURE (default 2.0); SKIP_SMOKE=1 skips step 4
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unit_src="$root/systemd/readerd.service"
bin="${1:-$root/target/debug/readerd}"
max_exposure="${MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-systemd: systemd-analyze not found" >&2
    exit 1
fi
if [[ $# -eq 0 && ! -x "$bin" ]]; then
    (cd "$root" && cargo build --quiet --bin readerd)
fi
[[ -x "$bin" ]] || { echo "check-systemd: no executable at $bin" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
unit="$tmp/readerd.service"
# Only the program path changes; the arguments stay as shipped.
sed -E "s|^ExecStart=[^ ]+|ExecStart=$bin|" "$unit_src" >"$unit"
grep -q "^ExecStart=$bin " "$unit" || { echo "check-systemd: ExecStart rewrite failed" >&2; exit 1; }

status=0

# verify: exit status and output both count; systemd reports some problems (unknown keys)
# only as text.
verify_out="$(cd "$tmp" && systemd-analyze verify "$unit" 2>&1)" || status=1
if [[ -n "$verify_out" ]]; then
    echo "check-systemd: systemd-analyze verify reported:" >&2
    echo "$verify_out" >&2
    status=1
else
    echo "check-systemd: verify clean"
fi

security_out="$(systemd-analyze security --offline=true "$unit" 2>&1)" || true
level="$(printf '%s\n' "$security_out" | sed -nE 's/.*Overall exposure level for readerd\.service: ([0-9]+(\.[0-9]+)?).*/\1/p' | tail -n1)"
if [[ -z "$level" ]]; then
    echo "check-systemd: could not read the exposure level from systemd-analyze security:" >&2
    echo "$security_out" >&2
    exit 1
fi
if awk -v l="$level" -v m="$max_exposure" 'BEGIN { exit !(l + 0 > m + 0) }'; then
    echo "check-systemd: exposure level $level is worse than $max_exposure" >&2
    printf '%s\n' "$security_out" | grep '✗' >&2 || true
    status=1
else
    echo "check-systemd: exposure level $level (limit $max_exposure)"
fi

# The per-mode template (readerd@test, readerd@live), verified and rated as an instance.
template="$tmp/readerd@test.service"
sed -E "s|^ExecStart=[^ ]+|ExecStart=$bin|" "$root/systemd/readerd@.service" >"$template"
template_out="$(cd "$tmp" && systemd-analyze verify "$template" 2>&1)" || status=1
if [[ -n "$template_out" ]]; then
    echo "check-systemd: systemd-analyze verify reported for readerd@test:" >&2
    echo "$template_out" >&2
    status=1
else
    echo "check-systemd: template verify clean"
fi
template_level="$(systemd-analyze security --offline=true "$template" 2>&1 | sed -nE 's/.*Overall exposure level for readerd@test\.service: ([0-9]+(\.[0-9]+)?).*/\1/p' | tail -n1)"
if [[ -z "$template_level" ]] || awk -v l="$template_level" -v m="$max_exposure" 'BEGIN { exit !(l + 0 > m + 0) }'; then
    echo "check-systemd: template exposure level ${template_level:-unknown} is worse than $max_exposure" >&2
    status=1
else
    echo "check-systemd: template exposure level $template_level (limit $max_exposure)"
fi

# Step 4: a smoke run of the daemon (needs curl).
smoke() {
    local sim_port api_port
    free() {
        local p
        for _ in $(seq 1 50); do
            p=$((20000 + RANDOM % 40000))
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                echo "$p"
                return
            fi
        done
        return 1
    }
    wait_http() {
        for _ in $(seq 1 250); do
            curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
            sleep 0.04
        done
        return 1
    }
    sim_port="$(free)"
    api_port="$(free)"
    while [[ "$api_port" == "$sim_port" ]]; do api_port="$(free)"; done
    local token_hash
    token_hash="$(printf %s smoke-admin | sha256sum | cut -d' ' -f1)"
    cat >"$tmp/readerd.toml" <<TOML
[stripe]
api_base = "http://127.0.0.1:$sim_port"
max_elapsed = "5s"
[store]
path = "$tmp/store"
[api]
listen = "127.0.0.1:$api_port"
[[api.clients]]
name = "smoke"
token_sha256 = "$token_hash"
role = "admin"
[log]
level = "warn"
TOML
    READERD_STRIPE_SECRET_KEY=sk_test_smoke "$bin" check-config --config "$tmp/readerd.toml" >/dev/null ||
        { echo "check-systemd: check-config refused the smoke config" >&2; return 1; }
    "$bin" sim --listen "127.0.0.1:$sim_port" >"$tmp/sim.log" 2>&1 &
    local sim_pid=$!
    READERD_STRIPE_SECRET_KEY=sk_test_smoke "$bin" run --config "$tmp/readerd.toml" >"$tmp/daemon.log" 2>&1 &
    local daemon_pid=$!
    local ok=0
    if ! wait_http "http://127.0.0.1:$sim_port/_sim/requests"; then
        echo "check-systemd: the emulator did not come up" >&2; ok=1
    elif ! wait_http "http://127.0.0.1:$api_port/readyz"; then
        echo "check-systemd: /readyz never answered 200" >&2; ok=1
    else
        local metrics
        metrics="$(curl -fsS "http://127.0.0.1:$api_port/metrics")" || ok=1
        for series in readerd_build_info readerd_stripe_requests_total readerd_stripe_degraded readerd_payments_total readerd_reader_online readerd_webhook_events_rejected_total; do
            if ! grep -q "^# TYPE $series " <<<"$metrics"; then
                echo "check-systemd: /metrics lacks $series" >&2; ok=1
            fi
        done
    fi
    kill -TERM "$daemon_pid" 2>/dev/null || true
    local rc=0
    wait "$daemon_pid" || rc=$?
    kill -TERM "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
    if [[ $rc -ne 0 ]]; then
        echo "check-systemd: the daemon exited $rc on SIGTERM" >&2; ok=1
    fi
    if [[ $ok -ne 0 ]]; then
        echo "--- daemon log" >&2; cat "$tmp/daemon.log" >&2
    else
        echo "check-systemd: smoke run ok (/readyz 200, /metrics served, exit 0 on SIGTERM)"
    fi
    return $ok
}

if [[ "${SKIP_SMOKE:-0}" != 1 ]]; then
    if command -v curl >/dev/null 2>&1; then
        smoke || status=1
    else
        echo "check-systemd: curl not found; smoke run skipped"
    fi
fi

exit "$status"
