#!/usr/bin/env bash
# What policies cost (issue 16): a converged `tenet plan` of N file.file resources with
# no policy (the floor), the same plan judged by the example policy set
# (examples/policy/policy: eight policies), the policy evaluation alone (as the plan
# reports it), and how long a preflight denial takes to refuse (no provider is loaded,
# so it must cost about what validating the manifest costs). Medians of RUNS, wall time
# and peak RSS.
#
# Usage: bench/policy.sh [TENET] [N] [RUNS]     default: target/release/tenet 10000 3
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
n=${2:-10000}
runs=${3:-3}
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TENET_CACHE_DIR="$work/cache" TENET_CACHE_KEY="$work/key/cache.key" NO_COLOR=1
source bench/lib.sh
manifest() { files_manifest "$1" "$n" ", labels: {owner: ops}" "$2"; }

manifest "$work/floor" ""
manifest "$work/judged" ""
cp -r examples/policy/policy "$work/judged/policy"
# Preflight denial: an interpreter granted to a second provider (never loaded).
manifest "$work/denied" "  shell: {source: ./never-loaded.wasm, unsigned: true, grants: {exec: [{program: /bin/sh}]}}"
cp -r examples/policy/policy "$work/denied/policy"

"$tenet" apply "$work/floor" --yes > /dev/null
"$tenet" apply "$work/judged" --yes > /dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # prints "seconds KiB" medians of RUNS
    local secs=() kibs=()
    for _ in $(seq 1 "$runs"); do
        /usr/bin/time -f "%e %M" -o "$work/t" "$@" > /dev/null 2>&1 || true
        read -r s k < <(tail -1 "$work/t"); secs+=("$s"); kibs+=("$k")
    done
    printf "%s %s" "$(printf '%s\n' "${secs[@]}" | median)" "$(printf '%s\n' "${kibs[@]}" | median)"
}

read -r fs fk <<< "$(measure "$tenet" plan "$work/floor")"
read -r js jk <<< "$(measure "$tenet" plan "$work/judged")"
evals=()
for _ in $(seq 1 "$runs"); do
    evals+=("$("$tenet" plan "$work/judged" --json | python3 -c 'import json,sys; print(sum(d["elapsed_ms"] for d in json.load(sys.stdin)["policy"]))')")
done
em=$(printf '%s\n' "${evals[@]}" | median)
read -r ds dk <<< "$(measure "$tenet" plan "$work/denied")"
"$tenet" plan "$work/denied" > /dev/null 2>&1 && { echo "the denied manifest was not denied" >&2; exit 1; } || true
read -r vs vk <<< "$(measure "$tenet" validate "$work/floor")"
printf "%-34s %10s %10s\n" "" "seconds" "peak MiB"
awk -v s="$fs" -v k="$fk" 'BEGIN {printf "%-34s %10.2f %10.1f\n", "plan, no policy (floor)", s, k / 1024}'
awk -v s="$js" -v k="$jk" 'BEGIN {printf "%-34s %10.2f %10.1f\n", "plan, judged by 8 policies", s, k / 1024}'
awk -v e="$em" -v s="$fs" 'BEGIN {printf "%-34s %10.3f %9.1f%%\n", "  policy evaluation (both stages)", e / 1000, 100 * e / 1000 / s}'
awk -v s="$ds" -v k="$dk" 'BEGIN {printf "%-34s %10.2f %10.1f\n", "plan refused at preflight", s, k / 1024}'
awk -v s="$vs" -v k="$vk" 'BEGIN {printf "%-34s %10.2f %10.1f\n", "validate, no policy", s, k / 1024}'
echo "(N=$n file.file resources + 10 directories, converged, median of $runs; $(nproc) cores; % of the floor's plan time)"
