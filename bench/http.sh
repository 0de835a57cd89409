#!/usr/bin/env bash
# Orchestration costs (issue 19):
# 1. a converged `tenet plan` of N `http.resource` objects against a local REST service
#    (tests/fixtures/http/server.py), beside the floor measured in the same run: the same
#    N GETs sent by curl, PAR at a time — with the service answering at once, and with
#    DELAY ms of latency per request (a real API's), where the plan should cost about
#    what the service does;
# 2. the wall time of examples/rolling's three rollouts (needs root and runit).
# Medians of RUNS runs.
#
# Usage: bench/http.sh [TENET] [N] [DELAY_MS]    default: target/release/tenet 100 10
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
n=${2:-100}
delay=${3:-10}
runs=${RUNS:-7}
par=10
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }

work=$(mktemp -d)
python3 tests/fixtures/http/server.py > "$work/port" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(head -1 "$work/port")
origin="http://127.0.0.1:$port"
export TENET_CACHE_DIR="$work/cache"

mkdir -p "$work/m"
{
  echo "providers:"
  echo "  http:"
  echo "    grants: {net: [\"$origin\"]}"
  echo "resources:"
  for i in $(seq 1 "$n"); do
    echo "  - {id: o$i, type: http.resource, properties: {url: \"$origin/api/objects/o$i\", body: {replicas: 3, name: o$i, spec: {port: $((8000 + i))}}}}"
  done
} > "$work/m/tenet.yaml"
"$tenet" apply "$work/m" --yes > /dev/null
# The same with one object: what a plan costs before it has work to do.
mkdir -p "$work/one"
head -5 "$work/m/tenet.yaml" > "$work/one/tenet.yaml"
"$tenet" apply "$work/one" --yes > /dev/null
: > "$work/urls"
for i in $(seq 1 "$n"); do echo "url = \"$origin/api/objects/o$i\"" >> "$work/urls"; echo "output = /dev/null" >> "$work/urls"; done

# median_ms CMD…: the median wall time of RUNS runs, in ms.
median_ms() {
  local times=() s e
  for _ in $(seq "$runs"); do
    s=$(date +%s%N); "$@" > /dev/null 2>&1; e=$(date +%s%N)
    times+=($(( (e - s) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

measure() {
  local label=$1
  local floor plan one
  floor=$(median_ms curl -s --parallel --parallel-max "$par" --config "$work/urls")
  plan=$(median_ms "$tenet" plan "$work/m" --detailed-exitcode)
  one=$(median_ms "$tenet" plan "$work/one" --detailed-exitcode)
  printf '%-26s floor (curl, %d at a time) %7s ms   tenet plan %7s ms (ratio %s; of one object %s ms)\n' \
    "$label" "$par" "$floor" "$plan" "$(awk -v a="$plan" -v b="$floor" 'BEGIN {printf "%.2f", a/b}')" "$one"
}

echo "Converged plan of $n http.resource objects ($(nproc) cores, medians of $runs runs)"
"$tenet" plan "$work/m" --detailed-exitcode > /dev/null || { echo "not converged" >&2; exit 1; }
measure "service answers at once:"
curl -s -X POST -d "{\"delay_ms\": $delay}" "$origin/control" > /dev/null
measure "service takes $delay ms:"
echo "  (floor: the GETs alone; a plan also starts Tenet, loads the provider and diffs)"

if [ "$(id -u)" = 0 ] && command -v runsvdir > /dev/null; then
  echo
  echo "examples/rolling (3 services under runit, serial: 1, http.check gates):"
  cp -r examples/rolling "$work/rolling"
  rm -rf "$work/rolling/service" "$work/rolling/conf" "$work/rolling/.tenet"
  TENET="$tenet" "$work/rolling/run.sh" 2>&1 | grep -E '^rollout|^127' | sed 's/^/  /'
else
  echo "(examples/rolling skipped: needs root and runit)"
fi
