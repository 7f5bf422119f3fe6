# Sourced by the scripts that start `odf-gateway serve` by hand (tests/memory-soak.sh,
# tests/pi-smoke.sh, gateway/deploy/footprint.sh).

# Writes to FILE a configuration on loopback with the ports given (0: picked at start) and
# anonymous clients allowed everything; more TOML (grant keys first) may follow.
#   loopback_config FILE HTTP_PORT MQTT_PORT COAP_PORT [MORE]
loopback_config() {
    cat > "$1" <<TOML
[http]
listen = ["127.0.0.1:$2"]
[mqtt]
listen = ["127.0.0.1:$3"]
[coap]
listen = ["127.0.0.1:$4"]
[anonymous]
write = ["*"]
query = ["*"]
subscribe = ["#"]
${5:-}
TOML
}
