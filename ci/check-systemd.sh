#!/usr/bin/env bash
# Checks systemd/readerd.service the way an installer would see it:
#   1. copies the unit to a temporary directory and points ExecStart at a real readerd binary;
#   2. `systemd-analyze verify` must print nothing about the unit (any output is a failure);
#   3. `systemd-analyze security --offline=true` must rate the unit at MAX_EXPOSURE or better.
#
# Usage: ci/check-systemd.sh [PATH_TO_READERD]   (default: target/debug/readerd, built if missing)
# Env:   MAX_EXPOSURE (default 2.0)
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

exit "$status"
