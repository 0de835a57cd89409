#!/usr/bin/env bash
# Cost of running programs through the sandbox: N `exec.command` resources, each guarded
# by `unless: [/usr/bin/test, -e, mN]` (a probe) and creating its marker with /bin/touch.
# Prints wall time and peak memory of the first apply (per resource: the guard during
# plan, the command, the guard again for the consistency check), of the converged re-run
# (one guard per resource), and the floor: the same programs spawned by a shell loop.
#
# Usage: bench/exec.sh [TENET] [N]     default: target/release/tenet 200
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
n=${2:-200}
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TENET_CACHE_DIR="$work/cache"
mkdir -p "$work/m/out"
{
  echo "providers:"
  echo "  exec:"
  echo "    grants:"
  echo "      fs: [{path: ./out, access: rw}]"
  echo "      exec:"
  echo "        - {program: /usr/bin/touch, args: [[\"*\"]]}"
  echo "        - {program: /usr/bin/test, args: [[-e, \"*\"]], mode: probe}"
  echo "resources:"
  for i in $(seq 1 "$n"); do
    echo "  - {id: c$i, type: exec.command, properties: {command: [/usr/bin/touch, m$i], cwd: ./out, unless: [/usr/bin/test, -e, m$i]}}"
  done
} > "$work/m/tenet.yaml"

measure() { # LABEL CMD...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/t" "$@" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs kib < "$work/t"
  printf '%-34s %6.2f s  %6.1f MiB\n' "$label" "$secs" "$(echo "$kib / 1024" | bc -l)"
}

(cd "$work/m" && "$tenet" validate > /dev/null)   # warm the compile cache
echo "N=$n exec.command resources (parallelism 10)"
measure "apply (2N probes + N commands)" bash -c "cd $work/m && $tenet apply --yes"
measure "converged re-run (N probes)" bash -c "cd $work/m && $tenet apply --yes"
rm -f "$work"/m/out/m*
measure "floor: shell loop, same 3N spawns" bash -c "cd $work/m/out && for i in \$(seq 1 $n); do /usr/bin/test -e m\$i; /usr/bin/touch m\$i; /usr/bin/test -e m\$i; done"
