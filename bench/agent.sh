#!/usr/bin/env bash
# What the agent costs and how fast it heals (issue 17), on N file.file resources in 10
# directories, with the release binary:
#   - time from a hand edit of a managed file to its correction: median, p99 and max over
#     EDITS edits of random files (each edit waits for its correction; default 100);
#   - the agent's idle CPU (share of one core over 10 s with nothing to do) and RSS;
#   - how much a converged run adds to state.db (runs woken by POST /run): the file's
#     growth after a WAL checkpoint, and the bytes of run records and stored blobs added.
# Nothing here is a timed assertion: it prints figures.
#
# Usage: bench/agent.sh [TENET] [N ...]     default: target/release/tenet 1000 10000
# Env: EDITS (100), DEBOUNCE (200ms)
set -euo pipefail
cd "$(dirname "$0")/.."
tenet=$(realpath "${1:-target/release/tenet}")
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
[ -x "$tenet" ] || { echo "build first: cargo build --release" >&2; exit 1; }
source bench/lib.sh
work=$(mktemp -d)
export TENET_CACHE_DIR="$work/cache" TENET_CACHE_KEY="$work/key/cache.key" NO_COLOR=1
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

printf "%-8s %10s %10s %10s %10s %10s %12s %12s\n" "N" "heal med" "heal p99" "heal max" "idle CPU" "idle RSS" "db/run" "stored/run"
for n in "${sizes[@]}"; do
    dir="$work/m$n"
    files_manifest "$dir" "$n"
    mkdir -p "$dir/out"
    "$tenet" apply "$dir" --yes > /dev/null
    "$tenet" agent "$dir" --interval 1h --listen 127.0.0.1:0 --debounce "${DEBOUNCE:-200ms}" \
        2> "$work/agent.log" > /dev/null &
    pid=$!
    python3 - "$dir" "$pid" "$work/agent.log" "${EDITS:-100}" "$n" <<'PYEOF'
import json, os, random, re, sys, time, urllib.request
d, pid, log, edits, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
addr = None
for _ in range(3000):
    m = re.search(r"serving http://(\S+)/metrics", open(log).read())
    if m:
        addr = m.group(1)
        break
    time.sleep(0.01)
assert addr, open(log).read()
def get(path, method="GET"):
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
def runs():
    return sum(float(l.rsplit(" ", 1)[1]) for l in get("/metrics")[1].splitlines()
               if l.startswith("tenet_agent_runs_total"))
while get("/readyz")[0] != 200:
    time.sleep(0.05)
time.sleep(1)
per = n // 10
random.seed(1)
heal = []
for i in range(edits):
    p = f"{d}/out/d{random.randrange(10)}/f{random.randrange(per)}.txt"
    want = open(p).read()
    t0 = time.perf_counter()
    with open(p, "w") as f:
        f.write(f"edited {i}\n")
    while True:
        try:
            if open(p).read() == want:
                break
        except FileNotFoundError:
            pass
        if time.perf_counter() - t0 > 30:
            raise SystemExit(f"not healed in 30 s: {p}")
        time.sleep(0.001)
    heal.append(time.perf_counter() - t0)
    time.sleep(0.05)
heal.sort()
med = heal[len(heal) // 2]
p99 = heal[min(len(heal) - 1, int(len(heal) * 0.99))]
# Idle: nothing to do for 10 s.
time.sleep(1)
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
c0, t0 = cpu(), time.time()
time.sleep(10)
idle = (cpu() - c0) / (time.time() - t0)
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")) / 1024
# state.db growth per converged run: the file after a WAL checkpoint, and what the
# history holds (run records and stored blobs).
import sqlite3
db = f"{d}/.tenet/state.db"
def size():
    c = sqlite3.connect(db, timeout=30)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # (A Tenet from before bounded history has no blobs table: compare the two.)
    blobs = c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'blobs'").fetchone()[0]
    stored = c.execute("SELECT coalesce(sum(length(record)), 0) FROM runs").fetchone()[0]
    if blobs:
        stored += c.execute("SELECT coalesce(sum(length(body)), 0) FROM blobs").fetchone()[0]
    c.close()
    return os.path.getsize(db), stored
k = 20
(file0, stored0), r0 = size(), runs()
for _ in range(k):
    r = runs()
    get("/run", "POST")
    while runs() < r + 1:
        time.sleep(0.01)
time.sleep(0.2)
file1, stored1 = size()
print(f"{n:<8} {med:9.3f}s {p99:9.3f}s {heal[-1]:9.3f}s {100*idle:9.2f}% {rss:7.1f}MiB"
      f" {(file1 - file0) / k / 1024:9.1f}KiB {(stored1 - stored0) / k:10.0f}B")
PYEOF
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
echo "(heal: hand edit → put back, over ${EDITS:-100} edits, debounce ${DEBOUNCE:-200ms}; idle over 10 s; db/run: state.db growth per converged run after a checkpoint, over 20 runs; stored/run: run record + new blob bytes per converged run; $(nproc) cores)"
