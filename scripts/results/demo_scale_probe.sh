#!/bin/bash
# The demo-scale recipe through `world4rl coverage` (direct sim API, one torch thread), as measured in
# docs/results.md#the-demo-2026-11-30-session-14. usage:
#   scripts/results/demo_scale_probe.sh RUNS NAME TASK DEMOS [frame|residual]
# e.g. scripts/results/demo_scale_probe.sh /work/runs/probe drawer15 drawer 15 frame  (~25 min)
set -euo pipefail
runs=$1 name=$2 task=$3 demos=$4 target=${5:-frame}
cd "$(dirname "$0")/../.."
wm=(--wm-set size=small --wm-set max_cpu_minutes=10 --wm-set max_minutes=30 --wm-set bf16=false)
if [ "$target" = residual ]; then
  wm+=(--wm-set target=residual --wm-set lr=0.001 --wm-set sampling_steps=1)
fi
MUJOCO_GL=${MUJOCO_GL:-osmesa} exec .venv/bin/world4rl coverage --run "$runs/$name" --task "$task" --expert "$demos" \
  --expert-noise 0.1 --policy-episodes 150 --random 30 --eval-episodes 100 --eval-seed 1000 --threads 1 --no-progress \
  --bc-set steps=1500 --bc-set lr=0.001 --bc-set augment_shift=0 "${wm[@]}" --reward-set max_minutes=3 \
  --refine-set total_steps=16384 --refine-set start=any --refine-set horizon=10 --refine-set reward_calibration=true \
  --refine-set seeds=1 --refine-set bf16=true --refine-set kl_bc_coef=0.1
