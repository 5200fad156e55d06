#!/usr/bin/env bash
# End-to-end aarch64 check of the BUILT WHEEL under qemu-user emulation (a Raspberry Pi 5
# stand-in: QEMU_CPU=cortex-a76). It installs the wheel + aarch64 wheels of its runtime
# dependencies (numpy, opencv-python-headless, tqdm; ai-edge-litert and onnxruntime from
# the [litert,onnx] extras) into a target folder with `pip install --target --platform`,
# runs the wheel's own `rdsrn` console script under an arm64 Python (Debian's, unpacked
# into a sysroot): `rdsrn upscale` with each bundled x4 model and `rdsrn bench --artifact`
# (no torch, no tensorflow), and compares every upscaled PNG pixel for pixel with the same
# command on this x86 machine (the same wheel installed for the host Python).
#
#   bash benchmarks/qemu_aarch64_wheel.sh [options] dist/rdsrn-VERSION-py3-none-any.whl
#
# Options:
#   --image PNG       LR input image (default: a seeded synthetic image of --size)
#   --size WxH        synthetic LR input and bench input size (default 64x48)
#   --models LIST     bundled model files to check, comma list (default: the INT8 ones,
#                     rdsrn_x4_int8.tflite,rdsrn_x4_int8.onnx; FP32 files work too but
#                     take minutes each under emulation, e.g. rdsrn_x4_fp32.tflite)
#   --no-bench        skip `rdsrn bench --artifact`
#   --host-cpuinfo    let the emulated process read the host's x86 /proc/cpuinfo (see below)
#   --dry-run         check the arguments, print the settings, do nothing
#   -h, --help        this text
# Environment: RDSRN_QEMU_ROOT (work folder, default /tmp/rdsrn-aarch64-wheel; everything
# downloaded goes there, pip's cache included), HOST_PYTHON (a Python with pip, default
# python3), LITERT_VERSION (default 2.1.6), ONNXRUNTIME_VERSION (default: newest),
# QEMU_CPU_MODEL (default cortex-a76), QEMU_NICE (default 10).
#
# Pass: every run succeeds and every *_int8.tflite output is bit-identical to x86. Other
# files are compared and reported (max abs diff) but may differ: ONNX Runtime's INT8 and
# any FP32 kernels legitimately round differently on ARM and x86.
# /proc/cpuinfo: under qemu-user the guest reads the HOST's x86 /proc/cpuinfo; the
# cpuinfo library inside onnxruntime then crashes on import (SIGSEGV). A real Pi 5 has an
# ARM one, so by default the script puts a Cortex-A76 /proc/cpuinfo (one entry per host
# CPU, MIDR 0x414fd0b1) in the sysroot, which qemu -L serves to the guest instead.
# Functional only: timings under emulation are meaningless and never printed (the bench
# tables go to log files). Needs root (apt-get) and network access to Debian and PyPI.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "qemu_aarch64_wheel.sh: error: $*" >&2; exit 2; }

IMAGE="" SIZE=64x48 NO_BENCH=0 HOST_CPUINFO=0 DRY_RUN=0 WHEEL=""
MODELS=rdsrn_x4_int8.tflite,rdsrn_x4_int8.onnx
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --image) [ $# -ge 2 ] || die "--image needs a file"; IMAGE=$2; shift 2 ;;
    --size) [ $# -ge 2 ] || die "--size needs WxH"; SIZE=$2; shift 2 ;;
    --models) [ $# -ge 2 ] || die "--models needs a list"; MODELS=$2; shift 2 ;;
    --no-bench) NO_BENCH=1; shift ;;
    --host-cpuinfo) HOST_CPUINFO=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$WHEEL" ] || die "one wheel only (got $WHEEL and $1)"; WHEEL=$1; shift ;;
  esac
done
[ -n "$WHEEL" ] || die "missing the wheel: qemu_aarch64_wheel.sh [options] rdsrn-*-py3-none-any.whl"
[ -f "$WHEEL" ] || die "$WHEEL: no such file"
case ${WHEEL##*/} in
  rdsrn-*-py3-none-any.whl) ;;
  *) die "$WHEEL: not an rdsrn pure-Python wheel (rdsrn-VERSION-py3-none-any.whl)" ;;
esac
WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/${WHEEL##*/}
[[ $SIZE =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "--size must look like 64x48, got '$SIZE'"
if [ -n "$IMAGE" ]; then
  [ -f "$IMAGE" ] || die "$IMAGE: no such file"
  IMAGE=$(cd "$(dirname "$IMAGE")" && pwd)/${IMAGE##*/}
fi
IFS=, read -r -a MODEL_LIST <<<"$MODELS"
[ ${#MODEL_LIST[@]} -gt 0 ] || die "--models is empty"
for m in "${MODEL_LIST[@]}"; do
  [[ $m =~ ^rdsrn_x[234]_[a-z0-9]+\.(tflite|onnx)$ ]] \
    || die "--models: '$m' is not a bundled file name such as rdsrn_x4_int8.tflite"
done
ROOT=${RDSRN_QEMU_ROOT:-/tmp/rdsrn-aarch64-wheel}
case $ROOT in /*) ;; *) die "RDSRN_QEMU_ROOT must be an absolute path, got '$ROOT'" ;; esac
case $ROOT/ in "$REPO"/*) die "RDSRN_QEMU_ROOT must be outside the repository" ;; esac
HOST_PY=${HOST_PYTHON:-python3}
LITERT=${LITERT_VERSION:-2.1.6}
ORT=${ONNXRUNTIME_VERSION:-}
CPU=${QEMU_CPU_MODEL:-cortex-a76}
PYVER=3.11

if [ $DRY_RUN = 1 ]; then
  printf '%s\n' "wheel=$WHEEL" "image=${IMAGE:-<synthetic $SIZE>}" "size=$SIZE" \
    "models=${MODEL_LIST[*]}" "bench=$([ $NO_BENCH = 1 ] && echo no || echo yes)" \
    "root=$ROOT" "host_python=$HOST_PY" "litert=$LITERT" "onnxruntime=${ORT:-newest}" \
    "qemu_cpu=$CPU" "cpuinfo=$([ $HOST_CPUINFO = 1 ] && echo host || echo cortex-a76)"
  exit 0
fi

# shellcheck source=benchmarks/qemu_aarch64_setup.sh
. "$HERE/qemu_aarch64_setup.sh"
SITE_A=$ROOT/site-aarch64
SITE_X=$ROOT/site-x86_64
OUT=$ROOT/out
export PIP_CACHE_DIR=$ROOT/pip-cache PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$ROOT"
rm -rf "$OUT" "$SITE_A" "$SITE_X"
mkdir -p "$OUT"
SUMMARY=$OUT/summary.jsonl

ensure_qemu
ensure_sysroot

# A Pi 5-like /proc/cpuinfo for the guest (qemu -L looks paths up in the sysroot first).
if [ $HOST_CPUINFO = 1 ]; then
  rm -f "$SYSROOT/proc/cpuinfo"
else
  mkdir -p "$SYSROOT/proc"
  ncpu=$(getconf _NPROCESSORS_CONF)
  for ((i = 0; i < ncpu; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' \
      "$i" "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
  done >"$SYSROOT/proc/cpuinfo"
  printf 'Model\t\t: emulated Cortex-A76 (qemu-user stand-in for a Raspberry Pi 5)\n' \
    >>"$SYSROOT/proc/cpuinfo"
fi

# Install the wheel + dependencies: for aarch64 (wheels only) and for this machine.
mapfile -t PLATFORMS < <(aarch64_platform_args | tr ' ' '\n')
pins=("ai-edge-litert==$LITERT")
[ -n "$ORT" ] && pins+=("onnxruntime==$ORT")
pip_target() {  # pip_target SITE EXTRAS [pip options...]
  local site=$1 extras=$2; shift 2
  "$HOST_PY" -m pip install -q --no-compile --target "$site" "$@" \
    "$WHEEL[$extras]" "${pins[@]}"
}
install_both() {  # install_both EXTRAS: aarch64 then x86_64; returns non-zero on failure
  rm -rf "$SITE_A" "$SITE_X"
  log "pip install --target (aarch64, cp${PYVER/./}, manylinux up to glibc 2.$(sysroot_glibc_minor)): $1"
  pip_target "$SITE_A" "$1" --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --abi "cp${PYVER/./}" "${PLATFORMS[@]}" >"$OUT/pip-aarch64.log" 2>&1 || return 1
  log "pip install --target (x86_64, $("$HOST_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')): $1"
  pip_target "$SITE_X" "$1" --only-binary=:all: >"$OUT/pip-x86_64.log" 2>&1 || return 1
}
if ! install_both litert,onnx; then
  log "install with onnxruntime failed: $(grep -m1 -i error "$OUT"/pip-*.log || true)"
  log "retrying without onnxruntime (the ONNX files then fail with a missing-runtime error)"
  pins=("ai-edge-litert==$LITERT")
  install_both litert || { log "install failed: see $OUT/pip-*.log"; exit 1; }
fi

# What is installed on each side (versions, and proof that torch / tensorflow are absent).
probe='import importlib.metadata as md, importlib.util as u, json, platform, sys
names = ["rdsrn", "numpy", "opencv-python-headless", "tqdm", "ai-edge-litert", "onnxruntime"]
def v(n):
    try: return md.version(n)
    except md.PackageNotFoundError: return None
import rdsrn
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
    "rdsrn_from": rdsrn.__file__, "packages": {n: v(n) for n in names},
    "torch": u.find_spec("torch") is not None,
    "tensorflow": u.find_spec("tensorflow") is not None}))'
# -S: no site module, so only the target folder (PYTHONPATH) supplies packages; no
# editable install or user site of the host Python can leak in. Run from $OUT so that
# '' on sys.path (python -c) is not a source checkout either.
cd "$OUT"
# On aarch64: a wrapper script that runs the arm64 Python under qemu and is its
# sys.executable, so that the bench harness's measuring subprocesses run emulated too.
on_x86() { env PYTHONPATH="$SITE_X" "$HOST_PY" -S "$@"; }
mkdir -p "$ROOT/bin"
write_aarch64_python "$ROOT/bin/python$PYVER" "$CPU" "$SITE_A"
on_arm() { nice -n "${QEMU_NICE:-10}" "$ROOT/bin/python$PYVER" "$@"; }
on_x86 -c "$probe" >"$OUT/env-x86_64.json"
on_arm -c "$probe" >"$OUT/env-aarch64.json" 2>"$OUT/env-aarch64.log" \
  || { log "aarch64 Python cannot import rdsrn: $(tail -n 3 "$OUT/env-aarch64.log")"; exit 1; }
log "x86_64:  $(cat "$OUT/env-x86_64.json")"
log "aarch64: $(cat "$OUT/env-aarch64.json")"

if [ -n "$IMAGE" ]; then
  INPUT=$OUT/lr_${IMAGE##*/}
  cp "$IMAGE" "$INPUT"
else
  INPUT=$OUT/lr_synthetic_$SIZE.png
  on_x86 "$HERE/qemu_check.py" make-input "$INPUT" "$SIZE"
fi

status=0
record() { echo "$1" >>"$SUMMARY"; log "$1"; }
failure() {  # failure RC LOG -> JSON string: exit code / signal and the log's last message
  local rc=$1 sig="" last
  [ "$rc" -gt 128 ] && sig=" (signal $((rc - 128))$( [ "$rc" = 139 ] && echo ", SIGSEGV"))"
  last=$(grep -vE '\.sh: line [0-9]+: +[0-9]+ ' "$2" | tail -n 1 || true)  # not bash's "PID Killed"
  "$HOST_PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "exit $rc$sig: $last"
}
# The console script pip generated from the wheel's entry point, run by each side's Python.
for model in "${MODEL_LIST[@]}"; do
  stem=${model/./_}
  ref=$OUT/x86_64_$stem.png got=$OUT/aarch64_$stem.png
  args=(upscale "$INPUT" -o OUTFILE --model "$model" -q)
  log "rdsrn ${args[*]}"
  rc=0
  on_x86 "$SITE_X/bin/rdsrn" "${args[@]/OUTFILE/$ref}" >"$OUT/x86_64_$stem.log" 2>&1 || rc=$?
  if [ $rc != 0 ]; then
    record "{\"model\": \"$model\", \"result\": \"x86_64 run failed\", \"error\": $(failure $rc "$OUT/x86_64_$stem.log")}"
    status=1; continue
  fi
  on_arm "$SITE_A/bin/rdsrn" "${args[@]/OUTFILE/$got}" >"$OUT/aarch64_$stem.log" 2>&1 || rc=$?
  if [ $rc != 0 ]; then
    record "{\"model\": \"$model\", \"result\": \"aarch64 run failed\", \"error\": $(failure $rc "$OUT/aarch64_$stem.log")}"
    status=1; continue
  fi
  cmp=$(on_x86 "$HERE/qemu_check.py" compare "$ref" "$got") \
    || { cmp='{"bit_exact": false, "error": "compare failed"}'; status=1; }
  sha=$(sha256sum "$SITE_A/rdsrn/runtimes/models/$model" | cut -c1-16)
  record "{\"model\": \"$model\", \"sha256\": \"$sha\", \"result\": \"ran on both\", \"compare\": $cmp}"
  if [[ $model == *_int8.tflite ]] && ! grep -q '"bit_exact": true' <<<"$cmp"; then status=1; fi
done

if [ $NO_BENCH = 0 ]; then
  for model in "${MODEL_LIST[@]}"; do
    stem=${model/./_}
    for side in x86_64 aarch64; do
      site=$SITE_X runner=on_x86
      [ $side = aarch64 ] && site=$SITE_A runner=on_arm
      bargs=(bench --artifact "$site/rdsrn/runtimes/models/$model" --input "$SIZE" --runs 2
             --warmup 0 --threads 1 --accuracy never --out "$OUT/bench-$side" --name "$stem")
      log "$side: rdsrn ${bargs[*]}  (timings not reported)"
      rc=0
      $runner "$site/bin/rdsrn" "${bargs[@]}" >"$OUT/bench-${side}_$stem.log" 2>&1 || rc=$?
      # the rows' status only (label, format, precision, status): never their timings
      read -r ok rows < <("$HOST_PY" -c 'import json,sys
try: rows = json.load(open(sys.argv[1]))["rows"]
except (OSError, ValueError, KeyError): rows = []
ok = int(sys.argv[2] == "0" and bool(rows) and all(r.get("status") == "ok" for r in rows))
print(ok, json.dumps([{k: r.get(k) for k in ("model", "format", "precision", "status")} for r in rows]))' \
        "$OUT/bench-$side/$stem.json" "$rc")
      err=null
      [ $ok = 1 ] || err=$(failure $rc "$OUT/bench-${side}_$stem.log")
      record "{\"bench\": \"$model\", \"side\": \"$side\", \"ok\": $([ $ok = 1 ] && echo true || echo false), \"rows\": $rows, \"error\": $err}"
      [ $ok = 1 ] || status=1
    done
  done
fi

log "results: $SUMMARY (logs and images in $OUT)"
log "end-to-end aarch64 check $([ $status = 0 ] && echo PASSED || echo FAILED) (no timings reported)"
exit $status
