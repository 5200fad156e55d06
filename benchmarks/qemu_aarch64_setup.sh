# Shared set-up for the qemu-user aarch64 checks (sourced by qemu_aarch64.sh and
# qemu_aarch64_wheel.sh, not run on its own): qemu-user-static from Debian, and an arm64
# Python from Debian's arm64 packages unpacked (not installed) into a sysroot folder.
# Needs root (apt-get, dpkg --add-architecture) and network access to Debian.
#
# Expects: ROOT (a /tmp folder), PYVER (e.g. 3.11); ensure_site also SITE and HOST_PY.
# Sets: SYSROOT.

SYSROOT=$ROOT/sysroot

log() { echo "[qemu-aarch64] $*" >&2; }

ensure_qemu() {  # qemu-user-static (Debian package)
  if ! command -v qemu-aarch64-static >/dev/null; then
    log "installing qemu-user-static"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
  fi
}

ensure_sysroot() {  # arm64 python$PYVER from Debian packages, unpacked into $SYSROOT
  [ -x "$SYSROOT/usr/bin/python$PYVER" ] && return 0
  log "fetching arm64 python$PYVER packages"
  mkdir -p "$SYSROOT" "$ROOT/debs"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -qq
  local pkgs
  pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
           --no-breaks --no-replaces --no-enhances --no-pre-depends \
           "python$PYVER-minimal:arm64" "libpython$PYVER-stdlib:arm64" "libstdc++6:arm64" \
         | grep -E '^[a-z0-9]' | grep ':arm64$' | sort -u)
  # shellcheck disable=SC2086  # one package name per word
  (cd "$ROOT/debs" && apt-get download $pkgs >/dev/null 2>&1 || true)
  local deb
  for deb in "$ROOT"/debs/*_arm64.deb; do dpkg -x "$deb" "$SYSROOT"; done
  [ -x "$SYSROOT/usr/bin/python$PYVER" ] || { log "arm64 python not unpacked"; return 1; }
}

sysroot_glibc_minor() {  # glibc minor version of the sysroot (e.g. 36 for 2.36)
  local f="" c
  for c in "$SYSROOT"/lib/aarch64-linux-gnu/libc.so.6 "$SYSROOT"/usr/lib/aarch64-linux-gnu/libc.so.6; do
    if [ -f "$c" ]; then f=$c; break; fi
  done
  [ -n "$f" ] || { log "no arm64 libc in $SYSROOT"; return 1; }
  grep -aoE 'GLIBC_2\.[0-9]+' "$f" | sed 's/GLIBC_2\.//' | sort -n | tail -n 1
}

aarch64_platform_args() {  # --platform flags for every manylinux tag the sysroot's glibc allows
  local top v
  top=$(sysroot_glibc_minor) || return 1
  echo "--platform manylinux2014_aarch64"
  for v in $(seq 17 "$top"); do echo "--platform manylinux_2_${v}_aarch64"; done
}

ensure_site() {  # aarch64 wheels of the requirements "$@", unzipped into $SITE (needs SITE, HOST_PY)
  local marker=$SITE/.requirements
  [ -f "$marker" ] && [ "$(cat "$marker")" = "$*" ] && return 0
  log "downloading aarch64 wheels ($*)"
  mkdir -p "$SITE" "$ROOT/wheels"
  # shellcheck disable=SC2046  # one flag per word
  "$HOST_PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" \
    $(aarch64_platform_args) -d "$ROOT/wheels" "$@"
  local whl
  for whl in "$ROOT"/wheels/*.whl; do "$HOST_PY" -m zipfile -e "$whl" "$SITE"; done
  echo "$*" >"$marker"
}

# Run the sysroot's python under qemu with SITE as PYTHONPATH (niced: emulation is
# CPU-heavy and the machine may be shared): run_aarch64 CPU SITE ARGS... (CPU "" = qemu's
# default CPU model).
run_aarch64() {
  local cpu=$1 site=$2; shift 2
  env ${cpu:+QEMU_CPU=$cpu} PYTHONHOME="$SYSROOT/usr" PYTHONPATH="$site" \
    nice -n "${QEMU_NICE:-10}" qemu-aarch64-static -L "$SYSROOT" "$SYSROOT/usr/bin/python$PYVER" "$@"
}

# write_aarch64_python PATH CPU SITE: a host shell script that runs the sysroot's python
# under qemu (CPU "" = qemu's default model) with SITE as PYTHONPATH and no site module
# (-S), and that tells the guest it *is* that script (QEMU_ARGV0). The guest's
# sys.executable is then runnable: a subprocess it starts with sys.executable (the bench
# harness measures each case that way) goes through qemu again, as binfmt_misc would do.
write_aarch64_python() {
  local path=$1 cpu=$2 site=$3 cpu_env
  if [ -n "$cpu" ]; then cpu_env="QEMU_CPU=$(printf %q "$cpu")"; else cpu_env="-u QEMU_CPU"; fi
  {
    echo '#!/bin/sh'
    echo "# written by qemu_aarch64_setup.sh: aarch64 python$PYVER under qemu-user"
    echo "exec env $cpu_env QEMU_ARGV0=$(printf %q "$path") PYTHONHOME=$(printf %q "$SYSROOT/usr") \\"
    echo "  PYTHONPATH=$(printf %q "$site") qemu-aarch64-static -L $(printf %q "$SYSROOT") \\"
    echo "  $(printf %q "$SYSROOT/usr/bin/python$PYVER") -S \"\$@\""
  } >"$path.tmp"
  chmod +x "$path.tmp"
  mv "$path.tmp" "$path"
}
