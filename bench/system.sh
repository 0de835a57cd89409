#!/usr/bin/env bash
# What a converged plan of N system resources costs (issue 14), per kind, next to a floor
# measured in the same run: the same reads done by a shell loop with the real tools.
#   file.line     N lines in N files          floor: grep -qxF per file
#   cron.job      N jobs in one cron.d        floor: cat per job file
#   account.group N groups (root only)        floor: getent group per name
# Each row: median of RUNS `tenet plan` wall times, per resource, and the floor's median.
# The account rows create N groups named tenetbench<pid>-K and remove them afterwards.
#
# Usage: bench/system.sh [TENET] [N] [RUNS]    default: target/release/tenet 50 5
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
n=${2:-50}
runs=${3:-5}
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
groups=()
cleanup() {
    for g in "${groups[@]}"; do groupdel "$g" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
export TENET_CACHE_DIR="$work/cache" TENET_CACHE_KEY="$work/key/cache.key" NO_COLOR=1

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
# Median wall time in ms of running "$@" RUNS times.
time_ms() {
    for _ in $(seq 1 "$runs"); do
        local t0; t0=$(now)
        "$@" > /dev/null 2>&1
        echo $(( ($(now) - t0) / 1000 ))
    done | median | awk '{printf "%.1f", $1 / 1000}'
}
row() { # kind, plan ms, floor ms
    awk -v k="$1" -v p="$2" -v f="$3" -v n="$n" \
        'BEGIN {printf "%-14s %10.1f %12.2f %12.1f\n", k, p, p / n, f}'
}
plan() { "$tenet" plan "$1" --detailed-exitcode; }

printf "%-14s %10s %12s %12s\n" kind "plan ms" "ms/resource" "floor ms"

# file.line
m="$work/line"; mkdir -p "$m/etc"
{
    echo "providers: {file: {grants: {fs: [{path: ./etc, access: rw}]}}}"
    echo "resources:"
    for i in $(seq 1 "$n"); do
        printf 'setting %s\nother line\n' "$i" > "$m/etc/f$i.conf"
        echo "  - {id: l$i, type: file.line, properties: {path: ./etc/f$i.conf, line: \"setting $i\", match: \"^setting \"}}"
    done
} > "$m/tenet.yaml"
"$tenet" apply "$m" --yes > /dev/null
plan "$m" > /dev/null || { echo "file.line plan is not converged" >&2; exit 1; }
floor_line() { for i in $(seq 1 "$n"); do grep -qxF "setting $i" "$m/etc/f$i.conf"; done; }
row file.line "$(time_ms plan "$m")" "$(time_ms floor_line)"

# cron.job
m="$work/cron"; mkdir -p "$m/cron.d"
{
    echo "providers: {cron: {grants: {fs: [{path: ./cron.d, access: rw}]}}}"
    echo "resources:"
    for i in $(seq 1 "$n"); do
        echo "  - {id: j$i, type: cron.job, properties: {name: job$i, dir: ./cron.d, schedule: \"$((i % 60)) 3 * * *\", command: /usr/bin/true}}"
    done
} > "$m/tenet.yaml"
"$tenet" apply "$m" --yes > /dev/null
plan "$m" > /dev/null || { echo "cron.job plan is not converged" >&2; exit 1; }
floor_cron() { for i in $(seq 1 "$n"); do cat "$m/cron.d/job$i"; done; }
row cron.job "$(time_ms plan "$m")" "$(time_ms floor_cron)"

# account.group
if [ "$(id -u)" = 0 ] && command -v groupadd > /dev/null; then
    m="$work/groups"; mkdir -p "$m"
    {
        echo "providers:"
        echo "  account:"
        echo "    grants:"
        echo "      exec:"
        echo "        - {program: /usr/bin/getent, args: [[group, \"*\"]], mode: probe}"
        echo "        - {program: /usr/sbin/groupadd, args: [[\"--\", \"*\"]]}"
        echo "resources:"
        for i in $(seq 1 "$n"); do
            g="tenetbench$$-$i"; groups+=("$g")
            echo "  - {id: g$i, type: account.group, properties: {name: $g}}"
        done
    } > "$m/tenet.yaml"
    "$tenet" apply "$m" --yes > /dev/null
    plan "$m" > /dev/null || { echo "account.group plan is not converged" >&2; exit 1; }
    floor_groups() { for g in "${groups[@]}"; do getent group "$g"; done; }
    row account.group "$(time_ms plan "$m")" "$(time_ms floor_groups)"
else
    echo "account.group  (skipped: needs root and groupadd)"
fi
echo "(N=$n, median of $runs; $(basename "$tenet") at $tenet; $(nproc) cores)"
