#!/usr/bin/env bash
# Builds the odf-gateway Debian package with cargo-deb (metadata in gateway/Cargo.toml): the
# binary (`pi-small` profile, or $PROFILE: stripped, size-optimised, fat LTO) in /usr/bin, the systemd service, the
# configuration in /etc/odf-gateway (a conffile) with the shipped schemas, the README.
#
#   gateway/deploy/build-deb.sh              # amd64 and arm64 (cross-built, see build-pi.sh)
#   gateway/deploy/build-deb.sh amd64
#
# The packages land in <target>/debian/ and <target>/aarch64-unknown-linux-gnu/debian/.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${PROFILE:-pi-small}
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64)

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb@3.8.0
for arch in "${archs[@]}"; do
    started=$SECONDS
    case $arch in
        amd64) target=() ;;
        arm64)
            # The cross compiler and the Rust target, as for build-pi.sh.
            if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
                sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
                "${sudo_cmd[@]}" apt-get update -qq
                DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq gcc-aarch64-linux-gnu
            fi
            rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
            target=(--target aarch64-unknown-linux-gnu) ;;
        *) echo "unknown architecture '$arch' (amd64, arm64)" >&2; exit 2 ;;
    esac
    # Built as build-pi.sh builds (both binaries: one feature resolution, one set of
    # artifacts for both scripts), then packaged; the profile strips the binary already (and
    # the host's strip cannot read arm64).
    cargo build --locked --profile "$profile" "${target[@]}" -p odf-gateway -p device-sim --bins
    deb=$(cargo deb -p odf-gateway --locked --profile "$profile" --no-build --no-strip "${target[@]}" | tail -n 1)
    echo "$arch: $deb ($(( $(stat -c %s "$deb") / 1000000 )) MB, built in $(( (SECONDS - started) / 60 )) min)"
    dpkg-deb -c "$deb" | awk '{ print "    " $1, $3, $6 }'
done
