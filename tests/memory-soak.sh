#!/usr/bin/env bash
# Memory over time: starts `odf-gateway serve` (shipped schemas, default limits, loopback
# ports it picks itself), drives it with `device-sim load` at a steady rate, and prints the
# gateway's resident memory every interval, then after the load has stopped. A flat tail
# is the point: bounded caches fill during the first minutes and then stay.
#
#   tests/memory-soak.sh [minutes] [reports per second] [devices] [sample seconds]
#
# The binaries are taken from $ODF_GATEWAY_BIN and $DEVICE_SIM_BIN, else from the cargo
# target folder (release if built, else debug).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/lib/gateway-config.sh
minutes=${1:-20}
rate=${2:-1000}
devices=${3:-60}
every=${4:-60}

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
pick() { for p in "$target/release/$1" "$target/debug/$1"; do [ -x "$p" ] && { echo "$p"; return; }; done; echo "no $1 built under $target" >&2; exit 1; }
gateway=${ODF_GATEWAY_BIN:-$(pick odf-gateway)}
sim=${DEVICE_SIM_BIN:-$(pick device-sim)}

work=$(mktemp -d)
trap 'kill "$gw_pid" "$sim_pid" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
cp -r schemas "$work/"
loopback_config "$work/gateway.toml" 0 0 0
(cd "$work" && exec "$gateway" serve --config gateway.toml --addresses-file addresses.json >gateway.log 2>&1) &
gw_pid=$!
for _ in $(seq 600); do [ -s "$work/addresses.json" ] && break; sleep 0.1; done
port() { python3 -c "import json,sys; a=json.load(open('$work/addresses.json')); print($1.rsplit(':',1)[1])"; }
http=$(port 'a["http"][0]'); mqtt=$(port 'a["mqtt"]["tcp"][0]'); coap=$(port 'a["coap"]["udp"][0]')

status() { awk -v k="$1:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$gw_pid/status"; }
cpu() { awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$gw_pid/stat"; }
echo "gateway $gateway (pid $gw_pid), $devices devices, $rate reports/s for $minutes min"
printf '%8s %10s %10s %10s %10s\n' elapsed rss_mib anon_mib peak_mib cpu_s
sample() { printf '%8s %10s %10s %10s %10s\n' "$1" "$(status VmRSS)" "$(status RssAnon)" "$(status VmHWM)" "$(cpu)"; }

(cd "$work" && exec "$sim" load --devices "$devices" --rate "$rate" --duration "${minutes}m" \
    --host 127.0.0.1 --http-port "$http" --mqtt-port "$mqtt" --coap-port "$coap" --status-every 1h >sim.log 2>&1) &
sim_pid=$!
start=$SECONDS
sample 0s
while kill -0 "$sim_pid" 2>/dev/null; do
    sleep "$every"
    sample "$((SECONDS - start))s"
done
wait "$sim_pid" || { echo "device-sim failed:" >&2; cat "$work/sim.log" >&2; exit 1; }
sleep 30
sample "+30s idle"
grep -E '^reports|^errors' "$work/sim.log" || tail -3 "$work/sim.log"
