#!/usr/bin/env bash
# What a provider's language costs: the same provider (`tenet provider new`'s `note` kind:
# a text file holding a note) scaffolded in Rust, Python and JavaScript, built, and
# measured: component size, compile time (first load, empty compile cache), cached load
# (`tenet plugin pack` with a warm cache: load + describe), and per-call overhead (a
# converged `plan` of N notes at parallelism 1: one read + one diff per resource).
#
# Needs componentize-py and jco on PATH (.ci/run installs them into target/tools).
# Usage: bench/languages.sh [TENET] [N]     default: target/release/tenet 200
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
n=${2:-200}
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
export PATH="$PWD/target/tools/py/bin:$PWD/target/tools/js/node_modules/.bin:$PATH"
export CARGO_TARGET_DIR="$PWD/target/bench-languages"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

seconds() { # CMD... -> wall seconds
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

printf '%-6s %10s %10s %10s %12s %14s\n' lang size compile cached "plan N=$n" "per resource"
for lang in rust python js; do
  name="note-$lang"
  "$tenet" provider new "$name" --lang "$lang" > /dev/null
  "$tenet" provider build "$name" > /dev/null
  wasm="$work/$name/$name.wasm"
  size=$(stat -c %s "$wasm")
  export TENET_CACHE_DIR="$work/cache-$lang"
  cold=$(seconds "$tenet" plugin pack "$wasm" -o "$work/$name.tenet")
  warm=$(seconds "$tenet" plugin pack "$wasm" -o "$work/$name.tenet")
  mkdir -p "m-$lang/notes"
  {
    echo "providers:"
    echo "  n:"
    echo "    source: $wasm"
    echo "    unsigned: true"
    echo "    grants: {fs: [{path: ./notes, access: rw}]}"
    echo "resources:"
    for i in $(seq 1 "$n"); do
      echo "  - {id: n$i, type: n.note, properties: {path: ./notes/n$i.txt, text: \"note $i\"}}"
    done
  } > "m-$lang/tenet.yaml"
  "$tenet" apply "m-$lang" --yes > /dev/null
  plan=$(seconds "$tenet" plan "m-$lang" --parallelism 1)
  empty=$(seconds "$tenet" validate "m-$lang")
  per=$(echo "($plan - $empty) * 1000 / $n" | bc -l)
  printf '%-6s %9.1fK %9.2fs %9.3fs %11.3fs %11.3f ms\n' "$lang" "$(echo "$size / 1024" | bc -l)" \
    "$(echo "$cold - $warm" | bc -l)" "$warm" "$plan" "$per"
done
echo "compile = first load minus cached load; cached = load + describe from the compile cache;"
echo "per resource = (converged plan - validate) / N: one read and one diff through the sandbox."
