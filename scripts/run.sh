#!/usr/bin/env bash
# The README's main-job command: installs, builds, then trains the tiny GPT on the embedded
# synthetic sorting task data-parallel under mpirun (LOOM_RUN_RANKS ranks, default 2; ZeRO-1;
# bf16 working weights and activations with f32 master weights; loom's shared-memory
# collectives), and evaluates the exported weights on a held-out stream of the same task on one
# rank. Extra arguments go to both runs (the training run's own flags come first, so yours win),
# e.g.
#   bash scripts/run.sh --zero 3 --precision fp32
#   LOOM_RUN_RANKS=4 bash scripts/run.sh --preset cpu-small --steps 50 --vocab_size 4096
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR="${LOOM_BUILD_DIR:-build}"
OUT="${LOOM_RUN_DIR:-out/run}"
RANKS="${LOOM_RUN_RANKS:-2}"
mkdir -p "$OUT"
rm -f "$OUT/metrics.jsonl" "$OUT/eval.jsonl"
MPI_FLAGS=(-np "$RANKS")
[ "$(id -u)" = 0 ] && MPI_FLAGS+=(--allow-run-as-root)
[ "$(nproc)" -lt "$RANKS" ] && MPI_FLAGS+=(--oversubscribe)
# A hang (a rank that died without MPI noticing) ends the job instead of blocking forever.
timeout 1800 mpirun "${MPI_FLAGS[@]}" "$BUILD_DIR/examples/train_gpt" --preset tiny --steps 300 \
  --lr 3e-3 --warmup_steps 20 --zero 1 --precision bf16 \
  --metrics_out "$OUT/metrics.jsonl" --export "$OUT/model.safetensors" "$@"
# The same flags again (model shape, data, batch), then the evaluation's own, which win: one rank.
"$BUILD_DIR/examples/train_gpt" --preset tiny "$@" --eval --eval_batches 8 --dp 1 --zero 0 \
  --init_from "$OUT/model.safetensors" --metrics_out "$OUT/eval.jsonl"
echo "metrics: $OUT/metrics.jsonl, eval: $OUT/eval.jsonl, weights: $OUT/model.safetensors"
echo "the embedded task's loss floor is 1.007 nats/token; a working model ends below 1.257"
