#!/usr/bin/env bash
# What the manifest language costs (issue 15): `tenet validate` and a converged
# `tenet plan` of N file.file resources written out flat, next to the same N made by one
# resource with `for_each` over a variable (expressions in each instance's properties),
# the cost of rendering one template per resource, and the same N through modules: a
# module per directory (`count`) with a `for_each` inside, and one module instance per
# resource (what a module call costs). Medians of RUNS, wall time and
# peak RSS; the flat manifest is the floor.
#
# Usage: bench/language.sh [TENET] [N] [RUNS]     default: target/release/tenet 10000 3
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
per=$(( n / 10 ))

header() {
    echo "providers:"
    echo "  file:"
    echo "    grants:"
    echo "      fs: [{path: ./out, access: rw}]"
}

# Flat: every resource written out.
mkdir -p "$work/flat"
{
    header
    echo "resources:"
    for d in $(seq 0 9); do
        echo "  - {id: d$d, type: file.directory, properties: {path: ./out/d$d}}"
        for f in $(seq 0 $(( per - 1 ))); do
            echo "  - {id: f$d-$f, type: file.file, properties: {path: ./out/d$d/f$f.txt, content: \"file $d/$f port 8080\\n\"}}"
        done
    done
} > "$work/flat/tenet.yaml"

# for_each: one resource per directory, its instances from a variable; the content is
# an expression over each.key, each.value and a variable.
mkdir -p "$work/loop"
{
    echo "vars:"
    echo "  port: 8080"
    echo "  files:"
    for f in $(seq 0 $(( per - 1 ))); do echo "    f$f: $f"; done
    header
    echo "resources:"
    for d in $(seq 0 9); do
        echo "  - {id: d$d, type: file.directory, properties: {path: ./out/d$d}}"
        echo "  - id: f$d"
        echo "    type: file.file"
        echo "    depends_on: [d$d]"
        echo "    for_each: \${ var.files }"
        echo "    properties: {path: \"./out/d$d/\${ each.key }.txt\", content: \"file $d/\${ each.value } port \${ var.port }\\n\"}"
    done
} > "$work/loop/tenet.yaml"

# template: as for_each, the content rendered from a template file per instance.
mkdir -p "$work/tmpl/templates"
sed 's|content: "file \([0-9]*\)/${ each.value } port ${ var.port }\\n"|content: "${ template(\x27templates/f.j2\x27, {\x27d\x27: \1, \x27i\x27: each.value}) }"|' "$work/loop/tenet.yaml" > "$work/tmpl/tenet.yaml"
printf 'file {{ d }}/{{ i }} port {{ var.port }}\n' > "$work/tmpl/templates/f.j2"

# module: a module called once per directory (`count`), its files a for_each inside.
mkdir -p "$work/module/modules/dir"
{
    echo "vars:"
    echo "  port: 8080"
    echo "  files:"
    for f in $(seq 0 $(( per - 1 ))); do echo "    f$f: $f"; done
    header
    echo "resources:"
    echo "  - id: m"
    echo "    module: ./modules/dir"
    echo "    count: 10"
    echo "    inputs: {d: \"\${ count.index }\", files: \"\${ var.files }\", port: \"\${ var.port }\"}"
} > "$work/module/tenet.yaml"
cat > "$work/module/modules/dir/main.yaml" <<'EOF'
inputs:
  d: {type: number}
  files: {type: map(number)}
  port: {type: number}
providers: [file]
resources:
  - {id: dir, type: file.directory, properties: {path: "./out/d${ var.d }"}}
  - id: f
    type: file.file
    depends_on: [dir]
    for_each: ${ var.files }
    properties: {path: "./out/d${ var.d }/${ each.key }.txt", content: "file ${ var.d }/${ each.value } port ${ var.port }\n"}
EOF

# module-each: one module instance per file (N instances of a one-resource module):
# what a module call itself costs.
mkdir -p "$work/module-each/modules/one"
{
    echo "vars:"
    echo "  port: 8080"
    echo "  files:"
    for d in $(seq 0 9); do for f in $(seq 0 $(( per - 1 ))); do echo "    d$d-f$f: {d: $d, i: $f}"; done; done
    header
    echo "resources:"
    for d in $(seq 0 9); do echo "  - {id: d$d, type: file.directory, properties: {path: ./out/d$d}}"; done
    echo "  - id: m"
    echo "    module: ./modules/one"
    echo "    for_each: \${ var.files }"
    echo "    depends_on: [d0, d1, d2, d3, d4, d5, d6, d7, d8, d9]"
    echo "    inputs: {d: \"\${ each.value.d }\", i: \"\${ each.value.i }\", port: \"\${ var.port }\"}"
} > "$work/module-each/tenet.yaml"
cat > "$work/module-each/modules/one/main.yaml" <<'EOF'
inputs:
  d: {type: number}
  i: {type: number}
  port: {type: number}
providers: [file]
resources:
  - {id: f, type: file.file, properties: {path: "./out/d${ var.d }/f${ var.i }.txt", content: "file ${ var.d }/${ var.i } port ${ var.port }\n"}}
EOF

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # prints "seconds KiB" medians of RUNS
    local secs=() kibs=()
    for _ in $(seq 1 "$runs"); do
        /usr/bin/time -f "%e %M" -o "$work/t" "$@" > /dev/null 2>&1 || true
        read -r s k < "$work/t"; secs+=("$s"); kibs+=("$k")
    done
    printf "%s %s" "$(printf '%s\n' "${secs[@]}" | median)" "$(printf '%s\n' "${kibs[@]}" | median)"
}

for m in flat loop tmpl module module-each; do "$tenet" apply "$work/$m" --yes > /dev/null; done
printf "%-12s %12s %12s %12s %12s\n" manifest "validate s" "plan s" "plan MiB" "µs/resource"
for m in flat loop tmpl module module-each; do
    read -r vs _ <<< "$(measure "$tenet" validate "$work/$m")"
    read -r ps pk <<< "$(measure "$tenet" plan "$work/$m" --detailed-exitcode)"
    "$tenet" plan "$work/$m" --detailed-exitcode > /dev/null || { echo "$m is not converged" >&2; exit 1; }
    awk -v m="$m" -v vs="$vs" -v ps="$ps" -v pk="$pk" -v n="$n" \
        'BEGIN {printf "%-12s %12.2f %12.2f %12.1f %12.1f\n", m, vs, ps, pk / 1024, ps * 1e6 / n}'
done
echo "(N=$n file.file resources + 10 directories, median of $runs; $(nproc) cores; flat = the floor)"
