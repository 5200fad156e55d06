#!/usr/bin/env bash
# Prepares the emulated runners of benchmarks/int8_paths.py: qemu-user 10 (static
# binaries from Debian 13's package, unpacked into $ROOT/qemu: it has the Neoverse-N2 CPU
# model, and its SVE emulation is right where Debian 12's qemu 7.2 gives LiteRT's SVE
# kernels wrong results), an arm64 Python 3.11 unpacked from Debian's arm64 packages, and
# the aarch64 wheels of numpy, onnxruntime and ai-edge-litert unzipped beside it.
#
#   bash benchmarks/int8_paths_setup.sh        # then: python -m rdsrn.benchmarks.int8_paths
#
# Needs root (apt-get, dpkg --add-architecture) and network access to Debian and PyPI.
# LiteRT 2.1.6: the newest ai-edge-litert whose aarch64 wheel runs under qemu 7.2.
set -euo pipefail
ROOT=${RDSRN_QEMU_ROOT:-/tmp/rdsrn-aarch64} SITE=${RDSRN_QEMU_ROOT:-/tmp/rdsrn-aarch64}/site
HOST_PY=${HOST_PYTHON:-python3} PYVER=3.11
mkdir -p "$ROOT"
# shellcheck source=benchmarks/qemu_aarch64_setup.sh
. "$(cd "$(dirname "$0")" && pwd)/qemu_aarch64_setup.sh"
ensure_qemu
ensure_sysroot
ensure_site "numpy<2.3" "onnxruntime==${ORT_VERSION:-1.32.0}" "ai-edge-litert==${LITERT_VERSION:-2.1.6}"
if [ ! -x "$ROOT/qemu/usr/bin/qemu-aarch64" ]; then
  log "fetching qemu-user from Debian 13 (trixie)"
  apt_dir=$ROOT/apt
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$ROOT/qemu"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
            -o APT::Architectures::=amd64)
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download qemu-user >/dev/null 2>&1)
  dpkg -x "$apt_dir"/qemu-user_*_amd64.deb "$ROOT/qemu"
fi
log "ready: $ROOT (the qemu-* runners of int8_paths.py)"
