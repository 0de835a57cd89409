#!/usr/bin/env bash
# Cost of distributing a provider: pack, sign, verify, push and install through a real
# registry (Debian's docker-registry on a loopback port, if installed), and what
# precompiling at install buys: the first `plan` of a manifest using the provider with a
# cold compile cache versus after `tenet init` compiled it.
#
# The component is the built-in file provider's (330 KB); pass another with COMPONENT=.
# Usage: bench/bundles.sh [TENET]     default: target/release/tenet
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
component=$(realpath "${COMPONENT:-target/guests/wasm32-wasip2/guest/tenet_plugin_file.wasm}")
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$component" ] || { echo "no $component: build first" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "needs docker-registry (apt-get install docker-registry)" >&2; exit 1; }

source bench/lib.sh
work=$(mktemp -d)
start_registry "$work"
port=$REGISTRY_PORT registry=$REGISTRY_PID
trap 'kill $registry 2>/dev/null; rm -rf "$work"' EXIT

export TENET_STORE_DIR="$work/store" NO_COLOR=1
cd "$work"
measure() { # LABEL CMD...
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  end=$(date +%s.%N)
  printf '%-52s %7.3f s\n' "$label" "$(echo "$end - $start" | bc -l)"
}
ref="oci://127.0.0.1:$port/tenet/file:bench"
printf 'component: %s (%s bytes)\n' "$component" "$(stat -c %s "$component")"
"$tenet" key generate --name bench > /dev/null
export TENET_CACHE_DIR="$work/cache-pack"
measure "pack (loads + describes the component)" "$tenet" plugin pack "$component" -o p.tenet
measure "sign" "$tenet" plugin sign p.tenet --key bench.key
measure "verify (digest, capabilities, signature)" "$tenet" plugin verify p.tenet --trust bench.pub
measure "push to the registry" "$tenet" plugin push p.tenet "$ref"

mkdir m && cat > m/tenet.yaml <<EOF
trust: [{file: ../bench.pub}]
providers:
  f:
    source: $ref
    grants: {fs: [{path: ./out, access: rw}]}
resources:
  - {id: x, type: f.file, properties: {path: ./out/x, content: hello}}
EOF
export TENET_CACHE_DIR="$work/cache-cold"
measure "init: pull, verify, store, precompile" "$tenet" init m
measure "first plan after init (compiled at install)" "$tenet" plan m
rm -rf "$work/cache-cold"
measure "first plan, compile cache emptied (compiles)" "$tenet" plan m
measure "second plan (cache warm)" "$tenet" plan m
rm -rf "$TENET_STORE_DIR"
measure "empty store, compile cache kept: init by pinned digest" "$tenet" init m
