#!/usr/bin/env bash
# What a converged plan of N system resources costs (issue 14), per kind, next to a floor
# measured in the same run: the same reads done by a shell loop with the real tools.
#   file.line     N lines in N files          floor: grep -qxF per file
#   cron.job      N jobs in one cron.d        floor: cat per job file
#   account.group N groups (root only)        floor: getent group per name
#   apt.package   N installed packages        floor: one dpkg-query for all of them (the
#                                             batched read), and one per package (what
#                                             N single reads would cost)
#   service.runit N services under a runsvdir floor: sv status per service
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
runsvdir_pid=
cleanup() {
    for g in "${groups[@]}"; do groupdel "$g" 2>/dev/null || true; done
    [ -n "$runsvdir_pid" ] && kill -HUP "$runsvdir_pid" 2>/dev/null && wait "$runsvdir_pid" 2>/dev/null
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
# apt.package: N packages already installed here (a converged plan reads them all).
if command -v dpkg-query > /dev/null; then
    m="$work/apt"; mkdir -p "$m"
    mapfile -t pkgs < <(dpkg-query -W -f='${db:Status-Status} ${Package}\n' | awk '$1 == "installed" && $2 !~ /:/ {print $2}' | head -n "$n")
    {
        echo "providers:"
        echo "  apt:"
        echo "    grants:"
        echo "      exec:"
        echo "        - {program: /usr/bin/dpkg-query, args: [[\"-W\", \"-f=*\", \"--\", \"**\"]], mode: probe}"
        echo "resources:"
        for p in "${pkgs[@]}"; do echo "  - {id: p-$p, type: apt.package, properties: {name: $p}}"; done
    } > "$m/tenet.yaml"
    plan "$m" > /dev/null || { echo "apt.package plan is not converged" >&2; exit 1; }
    floor_dpkg_once() { dpkg-query -W -f='${Package}\t${db:Status-Want}\t${db:Status-Eflag}\t${db:Status-Status}\t${Version}\n' -- "${pkgs[@]}"; }
    floor_dpkg_each() { for p in "${pkgs[@]}"; do dpkg-query -W -f='${Version}\n' -- "$p"; done; }
    row apt.package "$(time_ms plan "$m")" "$(time_ms floor_dpkg_once)"
    printf "%-14s %10s %12s %12.1f\n" "  (per-package dpkg-query loop)" "" "" "$(time_ms floor_dpkg_each)"
else
    echo "apt.package    (skipped: no dpkg-query)"
fi

# service.runit: N sleeping services supervised by a runsvdir of this script's own.
if command -v runsvdir > /dev/null && command -v sv > /dev/null; then
    m="$work/runit"; mkdir -p "$m/sv" "$m/service"
    {
        echo "providers:"
        echo "  service:"
        echo "    grants:"
        echo "      exec: [{program: /usr/bin/sv, args: [[status, \"/*\"]], mode: probe}]"
        echo "      fs: [{path: ./sv, access: ro}, {path: ./service, access: rw}]"
        echo "resources:"
        for i in $(seq 1 "$n"); do
            mkdir -p "$m/sv/s$i"
            printf '#!/bin/sh\nexec sleep 100000\n' > "$m/sv/s$i/run"; chmod +x "$m/sv/s$i/run"
            ln -s "../sv/s$i" "$m/service/s$i"
            echo "  - {id: s$i, type: service.runit, properties: {name: s$i, ensure: running, enable: true, sv_dir: ./sv, service_dir: ./service}}"
        done
    } > "$m/tenet.yaml"
    runsvdir -P "$m/service" & runsvdir_pid=$!
    for i in $(seq 1 "$n"); do
        for _ in $(seq 1 100); do sv status "$m/sv/s$i" 2>/dev/null | grep -q '^run:' && break; sleep 0.1; done
    done
    plan "$m" > /dev/null || { echo "service.runit plan is not converged" >&2; exit 1; }
    floor_sv() { for i in $(seq 1 "$n"); do sv status "$m/sv/s$i"; done; }
    row service.runit "$(time_ms plan "$m")" "$(time_ms floor_sv)"
else
    echo "service.runit  (skipped: needs runit)"
fi

echo
echo "component sizes (embedded in tenet):"
for c in target/guests/wasm32-wasip2/guest/tenet_plugin_*.wasm; do
    [ -f "$c" ] && printf "  %-28s %6d KiB\n" "$(basename "$c" .wasm)" $(( $(stat -c %s "$c") / 1024 ))
done
echo "(N=$n, median of $runs; $(basename "$tenet") at $tenet; $(nproc) cores)"
