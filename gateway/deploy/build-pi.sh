#!/usr/bin/env bash
# Builds odf-gateway and device-sim for a Raspberry Pi 4 or 5 (aarch64, 64-bit Raspberry Pi
# OS or Debian 12 arm64) on an x86-64 Debian machine, from a fresh clone: installs the cross
# compiler and the Rust target when they are missing, then builds with the `pi-small`
# profile (no debug info, symbols stripped, optimised for size, fat LTO: 48 MB) or the one
# named. The binaries end up in <target>/aarch64-unknown-linux-gnu/<profile>/.
#
#   gateway/deploy/build-pi.sh            # both binaries
#   PROFILE=pi gateway/deploy/build-pi.sh # opt-level 3, thin LTO: ~10% less CPU, 129 MB
set -euo pipefail
cd "$(dirname "$0")/../.."
target=aarch64-unknown-linux-gnu
profile=${PROFILE:-pi-small}

if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq gcc-aarch64-linux-gnu
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

started=$SECONDS
cargo build --locked --profile "$profile" --target "$target" -p odf-gateway -p device-sim --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/$target/$profile"
echo "built in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s:"
for bin in odf-gateway device-sim; do
    printf '  %s  %s MB\n' "$out/$bin" "$(( $(stat -c %s "$out/$bin") / 1000000 ))"
done
