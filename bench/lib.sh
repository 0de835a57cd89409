# Shared by the bench scripts (source it): the workload they measure.

# files_manifest DIR N [RESOURCE_KEYS] [GRANT_LINE] [CONTENT_TAG]: DIR/tenet.yaml with N
# file.file resources spread over 10 directories under ./out (plus the 10
# file.directory, each file after its directory by path), the `file` provider granted
# ./out. RESOURCE_KEYS is added to every resource (e.g. ", labels: {owner: ops}");
# GRANT_LINE is one more provider line under `providers:`; CONTENT_TAG ends every
# file's first line (e.g. " v1", to make a later version differ).
files_manifest() {
    local dir=$1 n=$2 keys=${3:-} grant=${4:-} tag=${5:-} d f
    local per=$(( n / 10 ))
    mkdir -p "$dir"
    {
        echo "providers:"
        echo "  file:"
        echo "    grants:"
        echo "      fs: [{path: ./out, access: rw}]"
        if [ -n "$grant" ]; then echo "$grant"; fi
        echo "resources:"
        for d in $(seq 0 9); do
            echo "  - {id: d$d, type: file.directory$keys, properties: {path: ./out/d$d}}"
            for f in $(seq 0 $(( per - 1 ))); do
                echo "  - {id: f$d-$f, type: file.file$keys, properties: {path: ./out/d$d/f$f.txt, mode: \"0644\", content: \"file $d/$f$tag\\n\"}}"
            done
        done
    } > "$dir/tenet.yaml"
}

# start_registry WORK: Debian's docker-registry on a free loopback port, storing under
# WORK/registry; sets REGISTRY_PORT and REGISTRY_PID (the caller kills it).
start_registry() {
    local work=$1
    REGISTRY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s/registry}}\nhttp: {addr: 127.0.0.1:%s}\n' \
        "$work" "$REGISTRY_PORT" > "$work/registry.yml"
    docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$REGISTRY_PORT) 2>/dev/null && break; sleep 0.05; done
}
