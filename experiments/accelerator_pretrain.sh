#!/usr/bin/env bash
# lensfm-small on one H100/H200 in about 8 minutes, one command:
#   bash experiments/accelerator_pretrain.sh OUT_DIR            # the accelerator recipe
#   bash experiments/accelerator_pretrain.sh OUT_DIR runlocal   # the same chain, CPU-sized
# 1. pretrains configs/lensfm_small.py (same-lens SimCLR + simulation-supervised, ViT-S/8);
# 2. exports its encoder to OUT_DIR/encoder (orbax, every file <= 16 MiB; ship it with
#    `cp -r OUT_DIR/encoder lensfm/weights/small` plus a MODEL_CARD.md);
# 3. scores it with LensBench's runlocal preset (OUT_DIR/bench/BENCH.md, bench.json).
# OUT_DIR/timings.txt records each phase's wall time.
set -euo pipefail
OUT=${1:?usage: bash experiments/accelerator_pretrain.sh OUT_DIR [CONFIG_ARGS]}
ARGS=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
phase() {  # phase NAME COMMAND...: runs it and appends its wall time to timings.txt.
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "$name $((SECONDS - start)) s" | tee -a "$OUT/timings.txt"
}
phase pretrain python -m lensfm.main --config="configs/lensfm_small.py${ARGS:+:$ARGS}" \
    --workdir="$OUT/pretrain"
phase export python experiments/export_weights.py --workdir="$OUT/pretrain" --out="$OUT/encoder"
phase bench python -m lensfm.main --config=configs/bench.py:preset=runlocal \
    --config.init_from="$OUT/encoder" --workdir="$OUT/bench"
echo "Encoder: $OUT/encoder   LensBench: $OUT/bench/BENCH.md"
