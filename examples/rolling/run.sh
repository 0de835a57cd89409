#!/usr/bin/env bash
# Runs the rolling example for real: a runsvdir for its services, then three rollouts —
# the first deploy, release 2 rolled through the three services one at a time, and
# release 3 with web-b broken (its check fails, its handler puts release 2 back, web-c is
# not started). Needs runit (`apt-get install runit`) and python3. TENET names the binary
# (default: a release build in this checkout). Prints the wall time of each rollout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tenet="${TENET:-$here/../../target/release/tenet}"
mkdir -p "$here/service" "$here/conf"
runsvdir -P "$here/service" &
runsvdir=$!
cleanup() {
    kill -HUP "$runsvdir" 2>/dev/null || true
    wait "$runsvdir" 2>/dev/null || true
}
trap cleanup EXIT
rollout() {
    local start end
    start=$(date +%s%N)
    "$tenet" apply "$here" --yes "$@" || true
    end=$(date +%s%N)
    echo "rollout $* took $(( (end - start) / 1000000 )) ms"
    echo
}
rollout --var release=1
rollout --var release=2
rollout --var release=3 --var previous=2 --var broken=web-b
for p in 18081 18082 18083; do
    printf '127.0.0.1:%s/health -> ' "$p"
    curl -s "http://127.0.0.1:$p/health" || echo "(no answer)"
    echo
done
