#!/usr/bin/env bash
# Wall time and peak memory of `tenet apply` on 1,000 file.file resources in 10
# directories: create, converged re-run, with a cold and a warm compile cache.
# Usage: bench/apply-1000.sh [path/to/tenet]   (default: target/release/tenet)
# Prints one line per scenario: seconds and peak RSS (GNU time).
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TENET_CACHE_DIR="$work/cache"

gen() { # $1 = manifest dir, $2 = content suffix
  {
    echo "providers:"
    echo "  file:"
    echo "    grants:"
    echo "      fs: [{path: ./out, access: rw}]"
    echo "resources:"
    for d in $(seq 0 9); do
      echo "  - {id: d$d, type: file.directory, properties: {path: ./out/d$d}}"
      for f in $(seq 0 99); do
        echo "  - {id: f$d-$f, type: file.file, depends_on: [d$d], properties: {path: ./out/d$d/f$f.txt, content: \"file $d/$f $2\\n\", mode: \"0644\"}}"
      done
    done
  } > "$1/tenet.yaml"
}

measure() { # $1 = label, rest = command
  local label=$1; shift
  local t="$work/time"
  /usr/bin/time -f '%e %M' -o "$t" "$@" > "$work/out" 2>&1 || { cat "$work/out"; exit 1; }
  read -r secs kb < "$t"
  printf '%-44s %6.2f s  %6.1f MiB peak RSS\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)"
}

mkdir -p "$work/m"
gen "$work/m" v1
cd "$work/m"
measure "create 1000 files, cold compile cache"       "$tenet" apply --yes
tail -1 "$work/out"
measure "converged re-run (no changes)"               "$tenet" apply --yes
tail -1 "$work/out"
rm -rf out
measure "create 1000 files, warm compile cache"       "$tenet" apply --yes
measure "plan only, converged, warm cache"            "$tenet" plan
gen "$work/m" v2
measure "update content of 1000 files"                "$tenet" apply --yes
tail -1 "$work/out"
files=$(find out -type f | wc -l)
echo "files on disk: $files"
