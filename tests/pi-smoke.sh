#!/usr/bin/env bash
# The aarch64 gateway proven under emulation (Debian's qemu-user): it serves a report over
# HTTP (curl), MQTT (mosquitto_pub, v5 QoS 1) and CoAP (coap-client, CON), stops on SIGTERM,
# and the aarch64 `tail` and `verify` find the three rows; then it is killed with SIGKILL
# during a `device-sim load` (the x86 simulator) and `device-sim verify` finds every
# acknowledged report once.
#
#   gateway/deploy/build-pi.sh && tests/pi-smoke.sh
#
# $PI_GATEWAY_BIN is the aarch64 binary (default: the `pi-small` build); $DEVICE_SIM_BIN the x86
# simulator (default: the release or debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/lib/gateway-config.sh

log() { printf '\n== %s\n' "$*" >&2; }
fail() { echo "FAILED: $*" >&2; [ -f "$work/gateway.log" ] && tail -n 30 "$work/gateway.log" >&2; exit 1; }

missing=()
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v coap-client-notls >/dev/null || missing+=(libcoap3-bin)
command -v curl >/dev/null || missing+=(curl)
[ -d /usr/aarch64-linux-gnu/lib ] || missing+=(libc6-arm64-cross)
if ((${#missing[@]})); then
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
gateway=${PI_GATEWAY_BIN:-$target_dir/aarch64-unknown-linux-gnu/pi-small/odf-gateway}
[ -x "$gateway" ] || fail "no aarch64 gateway at $gateway: run gateway/deploy/build-pi.sh"
# ELF e_machine 0xb7: AArch64.
[ "$(od -An -tx1 -j18 -N2 "$gateway" | tr -d ' \n')" = "b700" ] || fail "$gateway is not an aarch64 binary"
sim=${DEVICE_SIM_BIN:-}
for p in "$target_dir/release/device-sim" "$target_dir/debug/device-sim"; do
    [ -z "$sim" ] && [ -x "$p" ] && sim=$p
done
[ -n "$sim" ] || fail "no device-sim built under $target_dir"
pi() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$gateway" "$@"; }

work=$(mktemp -d)
gw_pid=
trap '[ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null; rm -rf "$work"' EXIT
cp -r schemas "$work/"
export ODF_GATEWAY_DATA_DIR="$work/data"
# Fixed ports for the run, so that the simulator finds the gateway again after the kill.
free_port() { python3 -c "import socket, sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" "$1"; }
http=$(free_port SOCK_STREAM); mqtt=$(free_port SOCK_STREAM); coap=$(free_port SOCK_DGRAM)
loopback_config "$work/gateway.toml" "$http" "$mqtt" "$coap"

start() {
    rm -f "$work/addresses.json"
    (cd "$work" && exec qemu-aarch64 -L /usr/aarch64-linux-gnu "$gateway" serve --config gateway.toml \
        --addresses-file addresses.json >>gateway.log 2>&1) &
    gw_pid=$!
    for _ in $(seq 1200); do
        [ -s "$work/addresses.json" ] && break
        kill -0 "$gw_pid" 2>/dev/null || fail "the gateway exited at start"
        sleep 0.1
    done
    [ -s "$work/addresses.json" ] || fail "the gateway did not start in 120 s"
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$http/readyz" >/dev/null && return
        sleep 0.1
    done
    fail "the gateway did not get ready"
}

log "aarch64 serve under qemu: $gateway"
start
curl -fsS -X POST "http://127.0.0.1:$http/datasets/gps/sources/vendorA" -H 'Content-Type: application/x-ndjson' \
    --data-binary '{"device_id":"PI-HTTP","seq":1,"t":"2026-01-01T12:00:00Z","lat":49.28,"lon":-123.12,"speed_kmh":31.5}' \
    || fail "HTTP POST"
echo
mosquitto_pub -h 127.0.0.1 -p "$mqtt" -V mqttv5 -q 1 -t datasets/gps/sources/vendorA \
    -m '{"device_id":"PI-MQTT","seq":1,"t":"2026-01-01T12:00:10Z","lat":49.281,"lon":-123.121}' || fail "mosquitto_pub"
coap-client-notls -m post -t 50 "coap://127.0.0.1:$coap/datasets/gps/sources/vendorC" \
    -e '{"i":"PI-COAP","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}' >/dev/null || fail "coap-client"
kill -TERM "$gw_pid"; wait "$gw_pid" || fail "serve did not exit cleanly on SIGTERM"; gw_pid=
rows=$(pi tail gps -n 10 -o json)
echo "$rows"
for device in PI-HTTP PI-MQTT PI-COAP; do
    grep -q "\"device_id\":\"$device\"" <<<"$rows" || fail "no row from $device"
done
pi verify gps || fail "verify"

log "kill -9 during device-sim load (x86 simulator, aarch64 gateway)"
start
(cd "$work" && "$sim" load --devices 12 --duration 20s --host 127.0.0.1 --http-port "$http" \
    --mqtt-port "$mqtt" --coap-port "$coap" --status-every 1h >sim.log 2>&1) &
sim_pid=$!
sleep 8
kill -9 "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=
sleep 2
start
wait "$sim_pid" || true
grep -E '^reports' "$work/sim.log" || tail -n 5 "$work/sim.log"
(cd "$work" && "$sim" verify --host 127.0.0.1 --http-port "$http" --wait 30s) || fail "device-sim verify"
kill -TERM "$gw_pid"; wait "$gw_pid" || true; gw_pid=
pi verify gps || fail "verify after the kill"
echo "pi-smoke: passed"
