"""Choose again among the PPO seeds of finished refine stages of a benchmark run, training nothing.

Refine stages finished before commit cb8c286 chose their seed with dreams as long as PPO's training
episodes (the recipe's 10 steps, from first frames), which score every seed 0 on tasks that take
longer. `world4rl refine` on a finished run of several seeds resumes each seed (nothing left to
train) and chooses again with the current rule (the robot's episode length). Run it before the
task's predict stage, which excludes the starts that chose. Arguments as bench/bench_learning.py's:

    .venv/bin/python scripts/results/reselect_seeds.py --suite franka --run RUNS/franka --threads 1 \
        --no-progress --tasks reach,push
"""

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_learning import coverage_config, parser


def main() -> int:
    args = parser().parse_args()
    from world4rl_bringup.coverage_cli import _refine_config
    from world4rl_bringup.stages import StageBook
    from world4rl_policy.ppo import refine

    cfg, _, _ = coverage_config(args)
    book = StageBook(cfg.root)
    for task in cfg.tasks:
        if book.entry(f"refine/{task}") is None:
            raise SystemExit(f"{cfg.root}: refine/{task} has not finished; the stage itself will choose")
        if book.entry(f"predict/{task}") is not None:
            raise SystemExit(f"{cfg.root}: predict/{task} already judged the old choice; redo it after this")
        summary = refine(dataclasses.replace(_refine_config(cfg, task), predict=False))
        selection = summary["selection"]
        print(task, json.dumps({k: selection[k] for k in ("chosen_seed", "imagined_success", "horizon")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
