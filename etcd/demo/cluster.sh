#!/usr/bin/env bash
# A local 3-member etcd cluster on 127.0.0.1 for the shmlock-etcd demo and examples
# (Debian's etcd-server package). Data in a temporary directory, removed on exit.
#
#   etcd/demo/cluster.sh            # runs in the foreground; Ctrl-C stops the members
#   etcd/demo/cluster.sh --check    # starts, waits until the cluster is healthy, stops
#
# Client endpoints: http://127.0.0.1:2379, :22379, :32379 (set SHMLOCK_ETCD_PORT_BASE to
# move them: the members use BASE+2379, BASE+22379, BASE+32379 and the next port for peers).
set -euo pipefail

command -v etcd >/dev/null || { echo "etcd is missing: apt-get install etcd-server" >&2; exit 1; }
base=${SHMLOCK_ETCD_PORT_BASE:-0}
dir=$(mktemp -d "${TMPDIR:-/tmp}/shmlock-etcd-demo.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

ports=($((base + 2379)) $((base + 22379)) $((base + 32379)))
initial=""
for i in 0 1 2; do
    initial+="${initial:+,}m$i=http://127.0.0.1:$((ports[i] + 1))"
done
for i in 0 1 2; do
    client="http://127.0.0.1:${ports[i]}"
    peer="http://127.0.0.1:$((ports[i] + 1))"
    etcd --name "m$i" --data-dir "$dir/m$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$initial" --initial-cluster-token shmlock-demo \
        --initial-cluster-state new --logger zap --log-level warn \
        >"$dir/m$i.log" 2>&1 &
    pids+=($!)
done

endpoints="http://127.0.0.1:${ports[0]},http://127.0.0.1:${ports[1]},http://127.0.0.1:${ports[2]}"
# Healthy when every member answers /health with "true" (etcd's HTTP health endpoint).
health() {
    exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 &&
        grep -q '"health":"true"' <&3
}
for _ in $(seq 100); do
    healthy=0
    for p in "${ports[@]}"; do
        if (health "$p") 2>/dev/null; then healthy=$((healthy + 1)); fi
    done
    [ "$healthy" = 3 ] && break
    sleep 0.2
done
[ "$healthy" = 3 ] || { echo "the cluster did not become healthy; logs in $dir" >&2; tail -5 "$dir"/m*.log >&2; exit 1; }

echo "etcd cluster up: $endpoints"
echo "  cargo run -p shmlock-etcd --example demo -- $endpoints"
if [ "${1:-}" = "--check" ]; then
    exit 0
fi
echo "Ctrl-C stops it."
wait
