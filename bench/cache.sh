#!/usr/bin/env bash
# What trusting the compile cache costs (issue 12): a cached load reads the entry into
# memory, checks owner/mode and an HMAC-SHA256 over it, then deserializes from memory
# (instead of mapping the file, which a writer could change under the process). For the
# built-in file provider and the Python provider (examples/providers/python-ini, ~18 MB
# component), prints the entry size and, per cached load (median of RUNS), the time spent
# reading, verifying and deserializing, next to two floors measured in the same run:
# `cat ENTRY > /dev/null` (reading the same bytes through the page cache) and
# `sha256sum ENTRY` (one hash pass over them).
#
# Needs componentize-py on PATH (scripts/test installs it into target/tools).
# Usage: bench/cache.sh [TENET] [RUNS]     default: target/release/tenet 15
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
runs=${2:-15}
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
export PATH="$PWD/target/tools/py/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TENET_CACHE_DIR="$work/cache" TENET_CACHE_KEY="$work/key/cache.key" NO_COLOR=1
"$tenet" provider build examples/providers/python-ini -o "$work/ini.wasm" > /dev/null
mkdir -p "$work/m/out"
cat > "$work/m/tenet.yaml" <<YAML
providers:
  file:
    grants: {fs: [{path: ./out, access: rw}]}
  ini:
    source: $work/ini.wasm
    unsigned: true
    grants: {fs: [{path: ./out, access: rw}]}
resources:
  - {id: a, type: file.file, properties: {path: ./out/a, content: a}}
YAML
"$tenet" validate "$work/m" > /dev/null 2>&1   # compiles both into the cache

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { awk '{printf "%.2f", $1 / 1000}'; }

for i in $(seq 1 "$runs"); do
  TENET_LOG=tenet=debug "$tenet" validate "$work/m" 2>&1 >/dev/null \
    | grep 'compiled component loaded from cache' >> "$work/log"
done
printf '%-8s %9s %9s %9s %12s %10s %10s %12s\n' provider "entry MB" "read ms" "hmac ms" \
  "deserial. ms" "total ms" "cat ms" "sha256sum ms"
for entry in "$work"/cache/compiled/*.cwasm; do
  base=$(basename "$entry")
  lines=$(grep -F "$base" "$work/log")
  field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$lines" | median; }
  read=$(field read_us); verify=$(field verify_us); deser=$(field deserialize_us)
  bytes=$(stat -c %s "$entry")
  name=$([ "$bytes" -gt 5000000 ] && echo python || echo file)
  floor() { # CMD -> median µs over RUNS
    for i in $(seq 1 "$runs"); do
      local s e; s=$(date +%s%N); "$@" > /dev/null; e=$(date +%s%N)
      echo $(( (e - s) / 1000 ))
    done | median
  }
  cat_us=$(floor cat "$entry"); sha_us=$(floor sha256sum "$entry")
  printf '%-8s %9.1f %9s %9s %12s %10s %10s %12s\n' "$name" "$(echo "$bytes / 1000000" | bc -l)" \
    "$(ms <<<"$read")" "$(ms <<<"$verify")" "$(ms <<<"$deser")" \
    "$(ms <<<"$((read + verify + deser))")" "$(ms <<<"$cat_us")" "$(ms <<<"$sha_us")"
done
echo "read + hmac is what verification adds over mapping the file; the floors include"
echo "starting the process (cat, sha256sum), so they overstate small entries."
