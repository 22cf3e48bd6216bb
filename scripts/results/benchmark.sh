#!/usr/bin/env bash
# The refinement benchmark (issue 14; docs/results.md#the-benchmark-recipe-2026-11-30): both suites
# with bench/profiles/recipe.yaml, side by side, one torch thread each (the machine's 2 cores), at
# nice 19 so interactive work and tests keep their latency. Run from the repository root:
#   bash scripts/results/benchmark.sh RUNS     (RUNS/metaworld, RUNS/franka; logs RUNS/*.log)
# Hours of CPU; every stage resumes, so rerunning the same command continues where it stopped. The
# world model's budget is CPU time (max_cpu_minutes), so a loaded machine does not shrink it.
set -uo pipefail
runs=${1:?runs directory}
mkdir -p "$runs"
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
for suite in metaworld franka; do
  nice -n 19 .venv/bin/python bench/bench_learning.py --suite "$suite" --run "$runs/$suite" --threads 1 --no-progress \
    >>"$runs/$suite.log" 2>&1 &
done
wait
# bench_learning writes bench/results/learning_metaworld.{json,md} and learning.{json,md}
