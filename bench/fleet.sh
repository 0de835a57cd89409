#!/usr/bin/env bash
# The fleet's side at fleet size (issue 18), with `tenet fleet simulate`: AGENTS simulated
# agents in one process, each reporting every INTERVAL through the real ingest service
# into PostgreSQL for DURATION, over a history seeded with SEED runs (30 days); a
# roll-out of a new artifact to the agents in 4 waves through a real registry (Debian's
# docker-registry) while they report. Prints report-write latency (p50/p95/p99/max),
# throughput, bytes per run and per node per day, and the fleet queries' latencies.
# Nothing here is a timed assertion: it prints figures.
#
# Usage: bench/fleet.sh [TENET]      default: target/release/tenet
# Env: AGENTS (1000), INTERVAL (30s), DURATION (5m), SEED (1000000),
#      PG (postgres://postgres@127.0.0.1:5432/test), WAVES (1%,10%,50%,100%)
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "needs docker-registry (apt-get install docker-registry)" >&2; exit 1; }
agents=${AGENTS:-1000} interval=${INTERVAL:-30s} duration=${DURATION:-5m} seed=${SEED:-1000000}
pg=${PG:-postgres://postgres@127.0.0.1:5432/test} waves=${WAVES:-1%,10%,50%,100%}
schema="tenet_bench_fleet_$$"
work=$(mktemp -d)
export TENET_CACHE_DIR="$work/cache" TENET_CACHE_KEY="$work/key/cache.key" NO_COLOR=1
reg=""
cleanup() {
    [ -n "$reg" ] && kill "$reg" 2>/dev/null
    psql "$pg" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

source bench/lib.sh
start_registry "$work"
port=$REGISTRY_PORT reg=$REGISTRY_PID

# Two releases of a small site, signed; the channel names the first.
(cd "$work" && "$tenet" key generate --name release >/dev/null)
repo="oci://127.0.0.1:$port/fleet/site"
for v in 1 2; do
    mkdir -p "$work/v$v"
    printf 'providers:\n  file:\n    grants:\n      fs: [{path: /srv/site, access: rw}]\nresources:\n  - {id: index, type: file.file, properties: {path: /srv/site/index.html, content: "release %s\\n"}}\n' "$v" > "$work/v$v/tenet.yaml"
    "$tenet" config push "$work/v$v" "$repo:v$v" --key "$work/release.key" > "$work/push$v.txt"
done
v2=$(sed -n 's/^digest: //p' "$work/push2.txt")
"$tenet" config tag "$repo:v1" "$repo:stable" >/dev/null

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(psql "$pg" -tA -c 'select version()' | cut -d' ' -f1-2)"
echo "fleet: $agents agents every $interval for $duration, $seed runs seeded, roll-out in waves $waves"
"$tenet" fleet simulate --db "$pg?schema=$schema" --agents "$agents" --interval "$interval" \
    --duration "$duration" --seed-runs "$seed" --rollout "$repo@$v2" --channel "$repo:stable" \
    --waves "$waves"
