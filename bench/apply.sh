#!/usr/bin/env bash
# Wall time and peak memory of `tenet` on N file.file resources in 10 directories:
# create, converged re-run (apply with nothing to do) and drift check
# (`plan --detailed-exitcode`), at each N and parallelism, with a warm compile cache;
# plus the first run with a cold cache, and the floor: bench/floor.c doing the same
# writes (atomically) and checks with no engine, sandbox or Wasm.
#
# Usage: bench/apply.sh [TENET] [N ...]      default: target/release/tenet 1000 10000
# Environment: PARALLELISM="1 10" (the values to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
shift || true
sizes=("${@:-1000 10000}")
[ $# -gt 0 ] || sizes=(1000 10000)
parallelism=${PARALLELISM:-"1 10"}
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
source bench/lib.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TENET_CACHE_DIR="$work/cache"
cc -O2 -o "$work/floor" bench/floor.c

measure() { # LABEL EXPECTED-EXIT COMMAND...
  local label=$1 want=$2; shift 2
  local t="$work/time" rc=0
  /usr/bin/time -f '%e %M' -o "$t" "$@" > "$work/out" 2>&1 || rc=$?
  if [ "$rc" != "$want" ]; then cat "$work/out"; echo "unexpected exit $rc for: $label" >&2; exit 1; fi
  read -r secs kb < "$t"
  printf '%-52s %7.2f s %7.1f MiB\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)"
}

printf '%-52s %9s %11s\n' "scenario" "wall" "peak RSS"
for n in "${sizes[@]}"; do
  m="$work/m$n"; files_manifest "$m" "$n" "" "" " v1"
  (cd "$m" && measure "N=$n first create, cold compile cache" 0 "$tenet" apply --yes)
  for p in $parallelism; do
    rm -rf "$m/out"
    (cd "$m" && measure "N=$n p=$p create" 0 "$tenet" apply --yes --parallelism "$p")
    (cd "$m" && measure "N=$n p=$p converged re-run" 0 "$tenet" apply --yes --parallelism "$p")
    (cd "$m" && measure "N=$n p=$p drift check (plan --detailed-exitcode)" 0 "$tenet" plan --detailed-exitcode --parallelism "$p")
  done
  f="$work/floor$n"; mkdir -p "$f"
  measure "N=$n floor: write atomically (C)" 0 "$work/floor" write "$f" "$n"
  rm -rf "$f"; mkdir -p "$f"
  measure "N=$n floor: write atomically + fsync (C)" 0 "$work/floor" write-sync "$f" "$n"
  measure "N=$n floor: check (C)" 0 "$work/floor" check "$f" "$n"
done
