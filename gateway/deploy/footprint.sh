#!/usr/bin/env bash
# The gateway's footprint, as one table: binary size, resident memory idle and under load,
# and SD-card wear (bytes written to the disk per acknowledged record, fsyncs per second).
# Each figure comes from a fresh `odf-gateway serve` with the shipped schemas, default
# settings and loopback ports, driven by `device-sim load` (vendorA: NdJson over MQTT, QoS 1).
#
#   gateway/deploy/footprint.sh                 # x86 figures of the `pi-small` (else pi, release) build
#   WEAR_SECONDS=300 gateway/deploy/footprint.sh
#   EXTRA_CONFIG=$'[pipeline]\nflush_interval = "5s"' gateway/deploy/footprint.sh   # other settings
#
# $ODF_GATEWAY_BIN and $DEVICE_SIM_BIN choose the binaries; $PI_GATEWAY_BIN (default: the
# aarch64 `pi-small` build, if there) adds its size and its idle memory under qemu-user. Bytes
# written are the gateway's `write_bytes` in /proc/PID/io (what reached the block layer,
# whole pages), fsyncs are counted with strace attached for the same window.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/gateway-config.sh
wear_seconds=${WEAR_SECONDS:-60}
EXTRA_CONFIG=${EXTRA_CONFIG:-}
load_seconds=${LOAD_SECONDS:-60}

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
pick() { for p in "$target/pi-small/$1" "$target/pi/$1" "$target/release/$1" "$target/debug/$1"; do [ -x "$p" ] && { echo "$p"; return; }; done; echo "no $1 built under $target" >&2; exit 1; }
gateway=${ODF_GATEWAY_BIN:-$(pick odf-gateway)}
sim=${DEVICE_SIM_BIN:-$(pick device-sim)}
pi_gateway=${PI_GATEWAY_BIN:-$target/aarch64-unknown-linux-gnu/pi-small/odf-gateway}
command -v strace >/dev/null || { echo "strace is needed to count fsyncs (apt-get install strace)" >&2; exit 1; }

work=$(mktemp -d)
gw_pid=
cleanup() { set +e; [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Starts a gateway in a fresh folder ($1: a command prefix, e.g. qemu); sets gw_pid and ports.
start() {
    rm -rf "$work/run"; mkdir "$work/run"; cp -r schemas "$work/run/"
    loopback_config "$work/run/gateway.toml" 0 0 0 "metrics = true"$'\n'"$EXTRA_CONFIG"
    (cd "$work/run" && exec "$@" serve --config gateway.toml --addresses-file addresses.json >gateway.log 2>&1) &
    gw_pid=$!
    for _ in $(seq 1200); do
        [ -s "$work/run/addresses.json" ] && break
        kill -0 "$gw_pid" 2>/dev/null || { cat "$work/run/gateway.log" >&2; exit 1; }
        sleep 0.1
    done
    port() { python3 -c "import json; a=json.load(open('$work/run/addresses.json')); print($1.rsplit(':',1)[1])"; }
    http=$(port 'a["http"][0]'); mqtt=$(port 'a["mqtt"]["tcp"][0]')
    until curl -fs "http://127.0.0.1:$http/readyz" >/dev/null; do sleep 0.2; done
}
stop() { kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=; }
# The process doing the work: under qemu-user it is the qemu process itself.
status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$gw_pid/status"; }
# User and system time of the gateway, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$gw_pid/stat"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
metric() { curl -fs "http://127.0.0.1:$http/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $2 } END { printf "%.0f", s }'; }
load() { # devices, rate, seconds
    "$sim" load --vendors a --devices "$1" --rate "$2" --duration "$3s" --host 127.0.0.1 \
        --mqtt-port "$mqtt" --record "$work/sim.json" --status-every 1h >"$work/sim.log" 2>&1 \
        || { cat "$work/sim.log" >&2; exit 1; }
}
# Waits until every accepted record is committed (or 30 s).
settle() {
    for _ in $(seq 150); do
        [ "$(metric odf_records_accepted_total)" = "$(metric odf_records_committed_total)" ] && return
        sleep 0.2
    done
}

# Bytes the disk under the work folder has written (sectors of 512 bytes), machine-wide.
disk_written() {
    local dev; dev=$(basename "$(df --output=source "$work" | tail -1)")
    awk '{ printf "%.0f", $7 * 512 }' "/sys/class/block/$dev/stat" 2>/dev/null || echo 0
}

rows=()
row() { rows+=("| $1 | $2 |"); }

row "binary (x86-64, $(basename "$(dirname "$gateway")") build)" "$(( $(stat -c %s "$gateway") / 1000000 )) MB"
[ -x "$pi_gateway" ] && row "binary (aarch64, $(basename "$(dirname "$pi_gateway")") build)" "$(( $(stat -c %s "$pi_gateway") / 1000000 )) MB"

echo "idle ..." >&2
start "$gateway"
sleep 10
row "idle: resident memory (anonymous + file-backed), threads" \
    "$(mib "$(status_kib VmRSS)") MiB ($(mib "$(status_kib RssAnon)") + $(mib "$(status_kib RssFile)")), $(status_kib Threads) threads"
stop

echo "wear: 100 devices, 1,000 reports/s for ${wear_seconds} s ..." >&2
start "$gateway"
data="$work/run/odf-data"
written_before=$(awk '$1 == "write_bytes:" { print $2 }' "/proc/$gw_pid/io")
disk_before=$(disk_written)
cpu_before=$(cpu_ticks)
strace -f -c -e trace=fsync,fdatasync,sync_file_range,syncfs -o "$work/strace.txt" -p "$gw_pid" 2>/dev/null &
strace_pid=$!
sleep 1
started=$(date +%s.%N)
load 100 1000 "$wear_seconds"
settle
ended=$(date +%s.%N)
kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
written=$(( $(awk '$1 == "write_bytes:" { print $2 }' "/proc/$gw_pid/io") - written_before ))
disk=$(( $(disk_written) - disk_before ))
cpu=$(( $(cpu_ticks) - cpu_before ))
records=$(metric odf_records_committed_total)
payload=$(metric odf_mqtt_publish_bytes_total)
wal_syncs=$(metric odf_wal_sync_seconds_count)
fsyncs=$(awk '$NF ~ /^(fsync|fdatasync|sync_file_range|syncfs)$/ { s += $4 } END { print s + 0 }' "$work/strace.txt")
seconds=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')
per_record=$(( written / (records > 0 ? records : 1) ))
per_payload=$(( payload / (records > 0 ? records : 1) ))
row "records committed; payload bytes per record" "$records; $per_payload B"
row "**bytes written per record** (all files, whole pages)" "**$per_record B** ($(awk -v w="$written" -v p="$payload" 'BEGIN { printf "%.1f", w / (p > 0 ? p : 1) }')× the payload)"
row "  the disk's own count (whole machine, file system journal included)" "$(( disk / (records > 0 ? records : 1) )) B"
per() { echo $(( $(du -s -B1 "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }') / (records > 0 ? records : 1) )); }
row "  disk space per record at the end: log / dataset (slices, blocks, checkpoints) / Ledger index" \
    "$(per "$data/.wal") B / $(per "$data/gps") B / $(per "$data/.index") B"
row "**fsyncs per second** (of which the log's group commits)" "**$(awk -v f="$fsyncs" -v s="$seconds" 'BEGIN { printf "%.1f", f / s }')** ($(awk -v f="$wal_syncs" -v s="$seconds" 'BEGIN { printf "%.1f", f / s }'))"
row "writes per day at 1,000 reports/s" "$(awk -v b="$per_record" 'BEGIN { printf "%.1f GB", b * 1000 * 86400 / 1e9 }')"
row "CPU per report (user + system, the gateway alone)" "$(awk -v t="$cpu" -v r="$records" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f µs", t / hz * 1e6 / (r > 0 ? r : 1) }')"
row "resident memory after the wear run (peak)" "$(mib "$(status_kib VmRSS)") MiB ($(mib "$(status_kib VmHWM)") MiB)"
stop

echo "load: 1,000 MQTT devices publishing once a second for ${load_seconds} s ..." >&2
start "$gateway"
load 1000 1000 "$load_seconds"
row "1,000 devices once a second: resident memory (peak)" "$(mib "$(status_kib VmRSS)") MiB ($(mib "$(status_kib VmHWM)") MiB)"
stop

if [ -x "$pi_gateway" ] && command -v qemu-aarch64 >/dev/null; then
    echo "idle under qemu-aarch64 ..." >&2
    start qemu-aarch64 -L /usr/aarch64-linux-gnu "$pi_gateway"
    sleep 10
    row "aarch64 idle under qemu-user: resident memory (qemu's own included)" "$(mib "$(status_kib VmRSS)") MiB"
    stop
fi

echo
echo "Footprint of $gateway on $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d)"
echo
echo "| measure | value |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
