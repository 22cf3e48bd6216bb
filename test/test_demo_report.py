"""The demo's report: both policies' success, curves from real TensorBoard logs, the dream gif in place."""

import json

import imageio.v2 as imageio
import numpy as np
from torch.utils.tensorboard import SummaryWriter

from world4rl_bringup.demo_report import write_report


def _deploy(path, successes, episodes, faults=0, solved_seeds=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "successes": successes,
        "episodes": episodes,
        "success_rate": successes / episodes,
        "ci95_wilson": [0.1, 0.6],
        "faults": faults,
        "latency_ms": {"p50": 5.0, "p99": 7.5, "cycles": 300},
    }
    if solved_seeds is not None:  # deploy's per-episode results (seeds 1000..)
        record["results"] = [{"seed": 1000 + i, "success": 1000 + i in solved_seeds} for i in range(episodes)]
    path.write_text(json.dumps(record))


def test_report_pairs_the_two_policies_seed_by_seed(tmp_path):
    run = tmp_path / "demo"
    _deploy(run / "deploy" / "bc.json", 10, 40, solved_seeds=set(range(1000, 1010)))
    _deploy(run / "deploy" / "refined.json", 26, 40, solved_seeds=set(range(1002, 1028)))
    report = write_report(run, "drawer", {}).read_text()
    # 10/40 -> 26/40: +40 points; Newcombe's interval for 25 % vs 65 % at n = 40 is +18.3..+56.8.
    line = next(x for x in report.splitlines() if x.startswith("Refined minus BC"))
    assert "on the 40 shared seeds: **+40.0 points** (Newcombe 95 % +18.3 .. +56.8; " in line
    assert "beyond its interval); seeds only the refined policy solved: 18, only BC: 2" in line
    assert "McNemar exact p = 0.000" in line

    _deploy(run / "deploy" / "refined.json", 8, 40, solved_seeds=set(range(1000, 1008)))
    line = next(x for x in write_report(run, "drawer", {}).read_text().splitlines() if x.startswith("Refined minus"))
    assert "**-5.0 points**" in line
    assert "within its interval); seeds only the refined policy solved: 0, only BC: 2" in line


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


def test_html_report_is_one_self_contained_page_with_videos_plots_and_tables(tmp_path, check_self_contained_html):
    import torch

    from world4rl_model.evaluation import Rollouts, side_by_side_video
    from world4rl_model.runtime import record_runtime, runtime_facts
    from world4rl_policy.prediction import GATE_FILE, GATE_FORMAT

    run = tmp_path / "demo"
    _deploy(run / "deploy" / "bc.json", 6, 20)
    _deploy(run / "deploy" / "refined.json", 9, 20)
    for name, tag in (("bc", "train/nll"), ("world_model", "train/loss")):
        with SummaryWriter(str(run / name / "tb")) as writer:
            for step in range(5):
                writer.add_scalar(tag, 1.0 / (step + 1), step)
    record_runtime(run / "world_model", "world-model", runtime_facts("cpu", 2, True))
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 6, 3, 16, 16), dtype=torch.uint8, generator=g)
    rollouts = Rollouts(real=frames, dreamed=frames.flip(0), episodes=[0, 1], starts=[0, 0])
    side_by_side_video(rollouts, run / "dream" / "dream.gif")  # what the demo's dream stage writes
    side_by_side_video(rollouts, run / "dream" / "dream.mp4")
    side_by_side_video(rollouts, run / "refined" / "imagined.mp4")
    table = "## World model open loop\n\n| horizon | PSNR model (dB) | PSNR copy-last (dB) |\n|---|---|---|\n"
    (run / "dream" / "world_model_eval.md").write_text(table + "| 1 | 30.12 | 28.65 |\n| 5 | 24.50 | 22.01 |\n")
    policies = {
        "bc": {"imagined_success": 0.5, "predicted_success": 0.31, "predicted_ci95": [0.2, 0.4]},
        "refined": {"imagined_success": 0.75, "predicted_success": 0.47, "predicted_ci95": [0.33, 0.61]},
    }
    discrimination = {"successes": 58, "failures": 42, "auc": 0.59, "ci95": [0.46, 0.72], "informative": False}
    shift = {"frames": 2048, "mean_abs": 0.0086, "max_abs": 0.116, "per_dimension": [0.01] * 4, "mean_in_bc_std": 0.37}
    prediction = {"policies": policies, "calibration": {"discrimination": discrimination}, "policy_shift": shift}
    gate = {"format": GATE_FORMAT, "deploy": "refined", "reason": "predicted better than BC by 16 points",
            "prediction": prediction}  # fmt: skip
    (run / "refined" / GATE_FILE).write_text(json.dumps(gate))

    markdown = write_report(run, "reach", {"collect": 60.0, "world_model": 303.0}).read_text()
    page = (run / "report.html").read_text()

    found = check_self_contained_html(page, markdown)
    assert found["videos"] == [6, 6, 6]  # the dream gif (as mp4), dream.mp4, imagined.mp4: every frame
    assert len(found["images"]) == 2  # the bc and world_model curves
    for text in ("6/20 = 30%", "9/20 = 45%", "10% .. 60%", "47% (33% .. 61%)", "predicted better than BC by 16",
                 "30.12", "28.65", "363", "world-model", "ROC AUC 0.59 (95 % 0.46-0.72)",
                 "moved the mean action by 0.0086", "0.37 of BC's standard deviations"):  # fmt: skip
        assert text in markdown, text
        assert text in page, text
    assert "<strong>refined</strong>" in page  # the gate's choice
