"""The demo's report: both policies' success, curves from real TensorBoard logs, the dream gif in place."""

import json

import imageio.v2 as imageio
import numpy as np
from torch.utils.tensorboard import SummaryWriter

from world4rl_bringup.demo_report import write_report


def _deploy(path, successes, episodes, faults=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "successes": successes,
                "episodes": episodes,
                "success_rate": successes / episodes,
                "ci95_wilson": [0.1, 0.6],
                "faults": faults,
                "latency_ms": {"p50": 5.0, "p99": 7.5, "cycles": 300},
            }
        )
    )


def test_report_shows_both_policies_curves_and_the_dream(tmp_path):
    run = tmp_path / "demo"
    _deploy(run / "deploy" / "bc.json", 6, 20)
    _deploy(run / "deploy" / "refined.json", 9, 20, faults=1)
    writer = SummaryWriter(str(run / "bc" / "tb"))
    for step in range(5):
        writer.add_scalar("train/nll", 1.0 / (step + 1), step)
    writer.close()
    dream = run / "dream"
    dream.mkdir()
    (dream / "world_model_eval.md").write_text("## World model open loop\n\n| horizon |\n|---|\n| 1 |\n")
    imageio.mimwrite(dream / "dream.gif", [np.zeros((8, 16, 3), np.uint8)] * 2, duration=0.2)

    report = write_report(run, "reach", {"collect": 60.0, "bc": 140.0}).read_text()

    assert "| BC | 6/20 = 30% | 10% .. 60% | 0 |" in report
    assert "| refined (PPO in the world model) | 9/20 = 45% | 10% .. 60% | 1 |" in report
    assert "![bc](figures/bc.png)" in report
    assert (run / "figures" / "bc.png").stat().st_size > 1000
    assert "![world_model]" not in report  # no logs, no empty figure
    assert "\n### World model open loop\n" in report  # one level below the dreams section
    assert "![dream vs real, each row real | dreamed](dream/dream.gif)" in report
    assert "- bc: p50 5.00 ms, p99 7.50 ms over 300 cycles" in report
    assert "| total | 200 |" in report
