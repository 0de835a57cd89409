#!/usr/bin/env bash
# How much memory one provider can make tenet hold (issue 12): N resources of the
# hostile test provider (tests/guests/misbehave, action `hold`: allocate M MiB and keep
# it in the instance) planned with --parallelism P under the default limits (256 MiB
# per instance, memory_total 1 GiB). Prints tenet's peak RSS and how many reads were
# refused by the budget, next to the floor measured in the same run: the same provider
# holding M MiB once (one resource).
#
# Usage: bench/memory.sh [TENET] [N] [M] [P]    default: target/release/tenet 40 200 10
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
n=${2:-40}
mib=${3:-200}
par=${4:-10}
guest="$PWD/target/guests/wasm32-wasip2/guest/tenet_test_guest_misbehave.wasm"
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$guest" ] || { echo "build the test guests first: cargo test --no-run" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TENET_CACHE_DIR="$work/cache" TENET_CACHE_KEY="$work/key/cache.key" NO_COLOR=1

manifest() { # DIR COUNT
  mkdir -p "$1/out"
  {
    echo "providers:"
    echo "  bad:"
    echo "    source: $guest"
    echo "    unsigned: true"
    echo "    grants:"
    echo "      exec: [{program: /bin/echo, args: [[\"**\"]], mode: probe}]"
    echo "      net: [\"http://127.0.0.1:*\"]"
    echo "      fs: [{path: ./out, access: rw}]"
    echo "resources:"
    for i in $(seq 1 "$2"); do
      echo "  - {id: hog$i, type: bad.probe, properties: {path: ./out/h$i, action: hold, value: $mib}}"
    done
  } > "$1/tenet.yaml"
}
peak() { # DIR -> "peak_mib refused"
  local out
  out=$( { /usr/bin/time -f 'PEAK %M' "$tenet" plan "$1" --parallelism "$par" 2>&1 || true; } )
  echo "$(( $(sed -n 's/^PEAK //p' <<<"$out") / 1024 )) $(grep -c 'memory budget exceeded' <<<"$out" || true)"
}
manifest "$work/one" 1
manifest "$work/many" "$n"
"$tenet" validate "$work/one" > /dev/null 2>&1   # compile once, into the cache
read -r floor _ < <(peak "$work/one")
read -r many refused < <(peak "$work/many")
printf '%-44s %10s %8s\n' scenario "peak RSS" refused
printf '%-44s %7s MiB %8s\n' "1 resource holding $mib MiB (floor)" "$floor" 0
printf '%-44s %7s MiB %8s\n' "$n resources x $mib MiB, --parallelism $par" "$many" "$refused"
echo "budget: memory_total 1 GiB (default); before issue 12 pooled instances kept their memory."
