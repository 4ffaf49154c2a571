#!/usr/bin/env bash
# What lensfm measures on a lent H100/H200, in calls of under 10 minutes each:
#   bash experiments/tools/accelerator_session.sh OUT_DIR         # on the accelerator
#   SECTIONS=variants,fsdp,attention PRETRAIN_S=0 \
#     bash experiments/tools/accelerator_session.sh OUT_DIR2      # the other sections, a 2nd call
#   bash experiments/tools/accelerator_session.sh OUT_DIR tiny    # the same chain on CPU, tiny
# 1. `python -m experiments.benchmarks.accelerator` -> OUT_DIR/accelerator.json (MFU, its
#    profile and variants, fsdp, cuDNN attention, simulator, input share: SECTIONS; at most
#    BENCH_ACCEL_S seconds), then its mfu section once per XLA_FLAGS in XLA_FLAG_VARIANTS
#    (';'-separated) -> OUT_DIR/accelerator_flags_N.json (at most FLAG_S seconds each);
# 2. experiments/tools/accelerator_pretrain.sh OUT_DIR/small: lensfm-small pretrained (at most
#    PRETRAIN_S; PRETRAIN_S=0 skips this half), exported, then LensBench `cpu` rows on it,
#    the rows lensfm:tiny's card leads with first (BENCH_ONLY), the rest after, until
#    BENCH_S runs out.
# Each phase is timed and bounded on its own, so one failing or slow phase costs only
# itself; OUT_DIR/timings.txt and OUT_DIR/*.log say what happened.
set -uo pipefail
OUT=${1:?usage: bash experiments/tools/accelerator_session.sh OUT_DIR [tiny]}
TINY=${2:-}
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
start=$SECONDS
if [ "$TINY" = tiny ]; then
  PRESET=runlocal
  XLA_FLAGS=--xla_force_host_platform_device_count=2 timeout -k 30 "${BENCH_ACCEL_S:-600}" \
    python -m experiments.benchmarks.accelerator --tiny --out="$OUT/accelerator.json" \
    > "$OUT/accelerator.log" 2>&1
else
  PRESET=cpu
  timeout -k 20 "${BENCH_ACCEL_S:-240}" python -m experiments.benchmarks.accelerator \
    --sections="${SECTIONS:-mfu,profile,input,simulator}" --steps=10 \
    --sim_iters=10 --variants="${VARIANTS:-batch2x,dot_f32}" --out="$OUT/accelerator.json" > "$OUT/accelerator.log" 2>&1
fi
echo "bench_accelerator $((SECONDS - start)) s (exit $?)" | tee -a "$OUT/timings.txt"
i=0
IFS=';' read -ra FLAG_VARIANTS <<< "${XLA_FLAG_VARIANTS:-}"
for flags in "${FLAG_VARIANTS[@]}"; do
  i=$((i + 1)); t=$SECONDS
  XLA_FLAGS="$flags ${XLA_FLAGS:-}" timeout -k 20 "${FLAG_S:-90}" python -m experiments.benchmarks.accelerator \
    ${TINY:+--tiny} --sections=mfu --steps=10 --out="$OUT/accelerator_flags_$i.json" \
    >> "$OUT/accelerator_flags.log" 2>&1
  echo "flags $i ($flags) $((SECONDS - t)) s (exit $?)" | tee -a "$OUT/timings.txt"
done
[ "${PRETRAIN_S:-190}" -gt 0 ] || { echo "session $((SECONDS - start)) s" | tee -a "$OUT/timings.txt"; exit 0; }
# The rows lensfm:tiny's card leads with, then every other row of the preset.
FIRST='^classify/model_ii/(10|100)/(finetune|linear|scratch)/s0$|^classify/model_(i|iii)/100/finetune/|^(regress|superres|lensfind)/.*/finetune/'
PRETRAIN_S=${PRETRAIN_S:-190} BENCH_S=${BENCH_S:-90} BENCH_ONLY=${BENCH_ONLY:-$FIRST} \
  bash experiments/tools/accelerator_pretrain.sh "$OUT/small" ${TINY:+runlocal} > "$OUT/small.log" 2>&1
rest=$SECONDS
[ "${BENCH_REST_S:-30}" -gt 0 ] && timeout -s TERM -k 30 "${BENCH_REST_S:-30}" python -m lensfm.main \
  --config="configs/bench.py:preset=$PRESET" --config.init_from="$OUT/small/encoder" \
  --workdir="$OUT/small/bench" >> "$OUT/small.log" 2>&1
echo "bench_rest $((SECONDS - rest)) s (exit $?)" | tee -a "$OUT/small/timings.txt"
echo "session $((SECONDS - start)) s" | tee -a "$OUT/timings.txt"
