#!/usr/bin/env bash
# lensfm-small on one H100/H200, one command (on an H200: 2,945 pretraining steps in 193 s):
#   bash experiments/tools/accelerator_pretrain.sh OUT_DIR            # the accelerator recipe
#   bash experiments/tools/accelerator_pretrain.sh OUT_DIR runlocal   # the same chain, CPU-sized
# 1. pretrains configs/lensfm_small.py (same-lens SimCLR + simulation-supervised, ViT 256x8);
# 2. exports its encoder to OUT_DIR/encoder (the `export` task, configs/export.py: orbax,
#    every file <= 16 MiB; ship it with `python -m lensfm.main --config=configs/export.py
#    --config.init_from=OUT_DIR/pretrain --config.name=small --workdir=OUT_DIR/export`
#    plus a MODEL_CARD.md);
# 3. scores it with LensBench (OUT_DIR/bench/BENCH.md, bench.json, rows/).
# Knobs (environment): PRETRAIN_S, BENCH_S: wall-time limits of phases 1 and 3 (SIGTERM:
# the pretraining saves a checkpoint at its next step and stops; the bench keeps every
# finished row and resumes at the next one when run again); BENCH_PRESET (cpu, the
# budgets of lensfm:tiny's published table; runlocal with runlocal); BENCH_ONLY (a regex
# of row ids, e.g. '^classify/model_ii/'). OUT_DIR/timings.txt has each phase's wall time.
set -uo pipefail
OUT=${1:?usage: bash experiments/tools/accelerator_pretrain.sh OUT_DIR [CONFIG_ARGS]}
ARGS=${2:-}
PRESET=${BENCH_PRESET:-$([ "$ARGS" = runlocal ] && echo runlocal || echo cpu)}
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
phase() {  # phase NAME SECONDS COMMAND...: runs it (at most SECONDS) and logs its wall time.
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout -s TERM -k 60 "$limit" "$@"
  rc=$?
  echo "$name $((SECONDS - start)) s (exit $rc)" | tee -a "$OUT/timings.txt"
  return $rc
}
phase pretrain "${PRETRAIN_S:-3600}" python -m lensfm.main \
    --config="configs/lensfm_small.py${ARGS:+:$ARGS}" --workdir="$OUT/pretrain"
phase export 600 python -m lensfm.main --config=configs/export.py \
    --config.init_from="$OUT/pretrain" --config.out="$OUT/encoder" --workdir="$OUT/export" || exit 1
phase bench "${BENCH_S:-7200}" python -m lensfm.main --config="configs/bench.py:preset=$PRESET" \
    --config.init_from="$OUT/encoder" --config.only="${BENCH_ONLY:-}" --workdir="$OUT/bench"
echo "Encoder: $OUT/encoder   LensBench: $OUT/bench/BENCH.md"
