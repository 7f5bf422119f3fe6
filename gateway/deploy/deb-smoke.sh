#!/usr/bin/env bash
# The amd64 package installed on this machine (Debian, as root), and the service's command
# line run as its unit runs it where no systemd is running (a container, a CI machine): user
# odf-gateway, working and state directory /var/lib/odf-gateway (made as StateDirectory=
# makes it), the unit's ExecStart, a notify socket. It waits for READY=1, sends a report over
# HTTP (curl), MQTT (mosquitto_pub, QoS 1) and CoAP (coap-client-notls), stops it with
# SIGTERM (STOPPING=1), finds the three rows with `tail` and `verify` as the service's user,
# then purges the package and the data it made.
#
#   gateway/deploy/build-deb.sh amd64 && gateway/deploy/deb-smoke.sh [path/to/the.deb]
#
# It uses the shipped configuration's fixed loopback ports (8080, 1883, 5683).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "run it as root (it installs a package)" >&2; exit 1; }
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
deb=${1:-$(ls -t "$target_dir"/debian/odf-gateway_*_amd64.deb | head -n 1)}
[ -f /var/lib/dpkg/info/odf-gateway.list ] && { echo "odf-gateway is installed already; remove it first" >&2; exit 1; }
[ -e /var/lib/odf-gateway ] && { echo "/var/lib/odf-gateway exists; move it away first" >&2; exit 1; }

log() { printf '\n== %s\n' "$*" >&2; }
work=$(mktemp -d)
chmod 755 "$work"
gw_pid=
listener=
cleanup() {
    set +e
    [ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null
    [ -n "$listener" ] && kill "$listener" 2>/dev/null
    dpkg --purge odf-gateway >/dev/null 2>&1
    rm -rf /var/lib/odf-gateway "$work"
}
trap cleanup EXIT

log "dpkg -i $deb"
dpkg -i "$deb"
dpkg-deb -c "$deb" | awk '{ print "  " $1, $3, $6 }'
id odf-gateway
for file in /etc/odf-gateway/config.toml /etc/odf-gateway/environment; do
    # Secrets (a bridge password, AWS keys): root's, readable by the service's group only.
    owner=$(stat -c '%U:%G %a' "$file")
    echo "$owner $file"
    [ "$owner" = "root:odf-gateway 640" ] || { echo "FAILED: $file is $owner" >&2; exit 1; }
done

log "the unit's command line, as the unit runs it"
unit=/lib/systemd/system/odf-gateway.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/odf-gateway.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
echo "ExecStart=$exec_start"
# StateDirectory=odf-gateway, StateDirectoryMode=0750.
install -d -o odf-gateway -g odf-gateway -m 0750 /var/lib/odf-gateway
# The notify socket systemd would listen on: every datagram printed to a file.
python3 - "$work/notify.sock" "$work/notified" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", " ") + "\n")
PY
listener=$!
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
# setpriv execs the command itself (runuser would stay in between and answer SIGTERM).
(cd /var/lib/odf-gateway && exec setpriv --reuid=odf-gateway --regid=odf-gateway --init-groups -- env -i PATH=/usr/bin:/bin \
    NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=60000000 $exec_start >"$work/gateway.log" 2>&1) &
gw_pid=$!
for _ in $(seq 600); do grep -q "READY=1" "$work/notified" 2>/dev/null && break; sleep 0.1; done
grep "READY=1" "$work/notified" || { cat "$work/gateway.log"; exit 1; }

log "a report over each protocol"
curl -fsS -X POST http://127.0.0.1:8080/datasets/gps/sources/vendorA -H 'Content-Type: application/x-ndjson' \
    --data-binary '{"device_id":"DEB-HTTP","seq":1,"t":"2026-01-01T12:00:00Z","lat":49.28,"lon":-123.12}'
echo
mosquitto_pub -h 127.0.0.1 -p 1883 -V mqttv5 -q 1 -t datasets/gps/sources/vendorA \
    -m '{"device_id":"DEB-MQTT","seq":1,"t":"2026-01-01T12:00:10Z","lat":49.281,"lon":-123.121}'
# JSON to a CBOR source: translated (the source says the format, the Content-Format differs).
coap-client-notls -m post -t 50 coap://127.0.0.1:5683/datasets/gps/sources/vendorC \
    -e '{"i":"DEB-COAP","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}'
kill -TERM "$gw_pid"; wait "$gw_pid"; gw_pid=
grep "STOPPING=1" "$work/notified"

log "the rows, read as the service's user"
runuser -u odf-gateway -- /usr/bin/odf-gateway tail gps --data-dir /var/lib/odf-gateway -n 10
rows=$(runuser -u odf-gateway -- /usr/bin/odf-gateway tail gps --data-dir /var/lib/odf-gateway -n 10 -o json | wc -l)
runuser -u odf-gateway -- /usr/bin/odf-gateway verify gps --data-dir /var/lib/odf-gateway
[ "$rows" -eq 3 ] || { echo "FAILED: $rows rows, not 3" >&2; cat "$work/gateway.log" >&2; exit 1; }
echo "passed: READY=1, three reports served and committed by the packaged service"
