#!/usr/bin/env bash
# The whole test suite. On a fresh Debian machine it first installs what the tests need and
# is missing (Debian packages with apt-get, Python packages with pip), then runs every test:
# the Rust unit and CLI tests, then the interop tests that read our output with other tools.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

# Debian peers: curl (HTTPS tests), mosquitto and its clients (MQTT tests, the bridge's
# upstream, the benchmark's plain broker), libcoap3-bin (CoAP), strace (the test that a
# PUBACK never comes before the fsync), systemd for systemd-analyze (the service unit's
# check). Python is needed by the interop tests; any python3 on the PATH will do.
debian_packages=(curl mosquitto mosquitto-clients libcoap3-bin strace)
command -v systemd-analyze >/dev/null || debian_packages+=(systemd)
command -v python3 >/dev/null || debian_packages+=(python3 python3-pip)
missing=()
for pkg in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

# Python peers, pinned in tests/interop/requirements.txt.
if ! python3 - tests/interop/requirements.txt <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, wanted = line.split("==")
    name = name.split("[")[0]  # moto[server]: the extra is not part of the name
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
    log "installing Python packages from tests/interop/requirements.txt"
    python3 -m pip install -q --disable-pip-version-check -r tests/interop/requirements.txt \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages -r tests/interop/requirements.txt
fi

# A Kafka-compatible broker for the Kafka tests: tansu (crates.io), built once into a folder
# outside the clone (like the target folder) so that repeated runs reuse it.
tansu_version=0.6.0
tansu_root="${TANSU_ROOT:-/var/tmp/odf-gateway-tools/tansu-$tansu_version}"
if [ -z "${TANSU_BIN:-}" ]; then
    if [ ! -x "$tansu_root/bin/tansu" ]; then
        log "installing tansu $tansu_version (a Kafka-compatible broker) into $tansu_root"
        CARGO_TARGET_DIR="$tansu_root/build" cargo install tansu --version "$tansu_version" --locked \
            --features dynostore --root "$tansu_root" --quiet
        rm -rf "$tansu_root/build"
    fi
    export TANSU_BIN="$tansu_root/bin/tansu"
fi

log "Rust tests"
cargo test --workspace --locked

log "interop tests"
# `cargo test` built the binary for the CLI tests; building it alone would resolve other
# features and rebuild half the dependency tree.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
test -x "$target_dir/debug/odf-gateway" || { echo "no odf-gateway binary in $target_dir/debug" >&2; exit 1; }
ODF_GATEWAY_BIN="$target_dir/debug/odf-gateway" python3 -m pytest -q tests/interop
