#!/usr/bin/env bash
# One device call: train x4, fine-tune x3 + x2, leave weights/logs/summary in $OUT.
# Needs only the device image's python3 (torch, numpy, opencv, pyyaml, safetensors, tqdm,
# matplotlib are there); nothing is installed: the package is made importable through a
# folder of symbolic links (rdsrn + export/runtimes/benchmarks as rdsrn.export, ...).
#
# Here, once:   python -m rdsrn.training.gpu_session pack      # -> .devdata/ (ignored)
# Device call:  run(command="bash rdsrn/training/gpu_session.sh", carry=[".devdata"], timeout_s=600)
# Here, after:  python -m rdsrn.training.gpu_session compare FILES_AT
#               python -m rdsrn.training.ship --run FILES_AT/rdsrn_x4 --name rdsrn_x4 --trained-on "..."
# Rehearsal (CPU, toy): PYTHON=.venv/bin/python OUT=/tmp/rehearse bash rdsrn/training/gpu_session.sh \
#               --toy --data ... --val ... --work /tmp/rehearse_work --x4-minutes 0.2 --ft-minutes 0.1
# Extra arguments go to python -m rdsrn.training.gpu_session (see its --help).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${OUT:?set OUT to the results folder}"
PY="${PYTHON:-python3}"
SHIM="$(mktemp -d)"
mkdir -p "$SHIM/rdsrn" "$OUT"
for f in "$REPO"/rdsrn/*; do ln -s "$f" "$SHIM/rdsrn/"; done
for d in export runtimes benchmarks; do ln -s "$REPO/$d" "$SHIM/rdsrn/$d"; done
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$REPO" || exit 2
"$PY" -m rdsrn.training.gpu_session --out "$OUT" "$@" 2>&1 | tee -a "$OUT/session.log"
exit "${PIPESTATUS[0]}"
