#!/usr/bin/env bash
# The reach + drawer results run again (docs/results.md#the-drawer-rerun-2026-11-29), then the
# second seed set. Run from the repository root: bash scripts/results/drawer_rerun.sh RUN
# (about 100 min on 2 cores; rerunning resumes). The world model trains exactly the 15,707 steps
# the first run reached in its 50 minutes (constant learning rate after the warm-up), so the
# machine's load cannot change the result; max_minutes 600 is only a cap.
set -euo pipefail
run=${1:?run directory}
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
.venv/bin/world4rl coverage --task reach --task drawer --expert 400 --expert-noise 0.1 \
  --policy-episodes 150 --random 30 --eval-episodes 100 \
  --bc-set steps=3000 --bc-set lr=0.001 --bc-set augment_shift=0 \
  --wm-set size=default --wm-set steps=15707 --wm-set max_minutes=600 --wm-set bf16=true --wm-set lr=0.0005 \
  --reward-set steps=2000 --reward-set bf16=true \
  --refine-set total_steps=40960 --refine-set horizon=30 --refine-set bf16=true --refine-set kl_bc_coef=0.1 \
  --run "$run" --threads 2
.venv/bin/world4rl eval policy --task drawer --episodes 100 --seed 2000 --videos 0 \
  --policy "$run/bc/drawer/best" --policy "$run/refine/drawer" --label bc --label refined \
  --out "$run/eval_2000/drawer"
