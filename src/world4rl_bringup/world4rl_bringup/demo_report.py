"""The demo's report: RUN/report.md with the numbers and pictures a person wants to see.

- success of the BC and the refined policy on the sim through ROS, with 95 % Wilson intervals;
- training curves (png) from each stage's TensorBoard scalars;
- the world model's open-loop table and its dream-vs-real video;
- the runtime node's latency (image arrival to command publish) from the deploy runs;
- how long each stage took.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

# Which scalars to plot per training run (the first ones that exist are used).
CURVES = {
    "reward": ["train/loss", "val/bce", "val/balanced_accuracy"],
    "bc": ["train/nll", "val/nll", "val/mse"],
    "world_model": ["train/loss", "val/loss", "val/psnr_1step"],
    "refined": ["imagined/episode_success", "imagined/episode_return", "ppo/kl_bc"],
}


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series in a TensorBoard log directory: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(tb_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            series.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}


def plot_curves(run_dir: Path, name: str, out: Path) -> Path | None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    tb_dir = run_dir / name / "tb"
    if not tb_dir.is_dir():
        return None
    series = read_scalars(tb_dir)
    wanted = [t for t in CURVES.get(name, []) if t in series] or sorted(series)[:3]
    if not wanted:
        return None
    fig, axes = plt.subplots(1, len(wanted), figsize=(4 * len(wanted), 3), squeeze=False)
    for ax, tag in zip(axes[0], wanted, strict=True):
        steps, values = zip(*series[tag], strict=True)
        ax.plot(steps, values)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(name)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _deploy_row(label: str, path: Path) -> str:
    if not path.is_file():
        return f"| {label} | (not run) | | |"
    data = json.loads(path.read_text())
    low, high = data["ci95_wilson"]
    return (
        f"| {label} | {data['successes']}/{data['episodes']} = {data['success_rate']:.0%} "
        f"| {low:.0%} .. {high:.0%} | {data.get('faults', 0)} |"
    )


def _latency_lines(paths: list[Path]) -> list[str]:
    lines = []
    for path in paths:
        if not path.is_file():
            continue
        latency = json.loads(path.read_text()).get("latency_ms")
        if latency:
            lines.append(
                f"- {path.stem}: p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms over {latency['cycles']} "
                "cycles (image arrival to command publish, policy_runner)"
            )
    return lines or ["- (the deploy results carry no latency figures)"]


def _gate_lines(run_dir: Path) -> list[str]:
    """The policy `world4rl deploy --policy RUN/refined` would run, and the prediction behind it."""
    from world4rl_policy.prediction import read_gate

    gate = read_gate(run_dir / "refined")
    if gate is None:
        return ["(no gate decision: the refine stage predates it)", ""]
    lines = [
        "## Which policy to deploy",
        "",
        f"The gate chose **{gate['deploy']}**: {gate['reason']}. `world4rl deploy --policy RUN/refined` deploys it; "
        "`--policy-choice bc|refined` deploys either explicitly.",
        "",
    ]
    prediction = gate.get("prediction")
    if prediction:
        lines += ["| policy | imagined success | predicted real success (95 % interval) |", "|---|---|---|"]
        for name, p in prediction["policies"].items():
            lo, hi = p["predicted_ci95"]
            lines.append(
                f"| {name} | {p['imagined_success']:.0%} | {p['predicted_success']:.0%} ({lo:.0%} .. {hi:.0%}) |"
            )
        lines.append("")
    return lines


def write_report(run_dir: Path, task: str, timings: dict[str, float]) -> Path:
    figures = run_dir / "figures"
    lines = [
        f"# World4RL demo: task `{task}` on the embedded sim robot",
        "",
        "## Success in the sim, through ROS (policy_runner behind the safety filter)",
        "",
        "| policy | success | 95 % Wilson CI | safety faults |",
        "|---|---|---|---|",
        _deploy_row("BC", run_dir / "deploy" / "bc.json"),
        _deploy_row("refined (PPO in the world model)", run_dir / "deploy" / "refined.json"),
        "",
        "Both ran the same seeded episodes; success is the simulator's own success flag.",
        "",
        *_gate_lines(run_dir),
        "## Training curves",
        "",
    ]
    for name in CURVES:
        figure = plot_curves(run_dir, name, figures / f"{name}.png")
        if figure is not None:
            lines += [f"![{name}]({figure.relative_to(run_dir)})", ""]
    lines += ["## The world model's dreams", ""]
    dream = run_dir / "dream"
    table = next(iter(sorted(dream.glob("*.md"))), None) if dream.is_dir() else None
    if table is not None:
        # The evaluation's own headings sit one level below this section's.
        lines += [re.sub(r"^(#+) ", r"#\1 ", table.read_text().strip(), flags=re.M), ""]
    videos = sorted([*dream.glob("*.mp4"), *dream.glob("*.gif")]) if dream.is_dir() else []
    for v in videos:
        if v.suffix == ".gif":  # shown in place; each row is real | dreamed
            lines += [f"![dream vs real, each row real | dreamed]({v.relative_to(run_dir)})", ""]
    lines += [f"- dream vs real: [{v.name}]({v.relative_to(run_dir)})" for v in videos] or ["- (no dream video)"]
    imagined = run_dir / "refined" / "imagined.mp4"
    if imagined.is_file():
        lines.append(f"- imagined PPO episodes: [{imagined.name}]({imagined.relative_to(run_dir)})")
    lines += ["", "## Runtime latency", ""]
    lines += _latency_lines([run_dir / "deploy" / "bc.json", run_dir / "deploy" / "refined.json"])
    lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    lines += [f"| total | {sum(timings.values()):.0f} |", ""]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
