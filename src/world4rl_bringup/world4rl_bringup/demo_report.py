"""The demo's report: RUN/report.md with the numbers and pictures a person wants to see.

- success of the BC and the refined policy on the sim through ROS, with 95 % Wilson intervals;
- training curves (png) from each stage's TensorBoard scalars;
- the world model's open-loop table and its dream-vs-real video;
- the runtime node's latency (image arrival to command publish) from the deploy runs;
- how long each stage took, and with which speed settings (tcmalloc, bf16, threads) its torch
  processes ran.

Beside it, RUN/report.html: the same report as one self-contained page (write_html): figures as
PNG data URIs, videos (the dream gif converted) as H.264 mp4 data URIs that play inline, no
external resources, so it can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import tempfile
from pathlib import Path

# Which scalars to plot per training run (the first ones that exist are used).
CURVES = {
    "reward": ["train/loss", "val/bce", "val/balanced_accuracy"],
    "bc": ["train/nll", "val/nll", "val/mse"],
    "world_model": ["train/loss", "val/loss", "val/psnr_1step", "val/action_gain_db"],
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


def _difference_lines(bc_path: Path, refined_path: Path) -> list[str]:
    """Refined minus BC on the seeds both ran: the difference with Newcombe's 95 % interval, and
    McNemar's exact test on the seeds only one of them solved."""
    from world4rl_model.statistics import paired_difference

    if not (bc_path.is_file() and refined_path.is_file()):
        return []
    bc, refined = (
        {r["seed"]: r["success"] for r in json.loads(p.read_text()).get("results", [])} for p in (bc_path, refined_path)
    )
    seeds = sorted(set(bc) & set(refined))
    if not seeds:
        return ["(BC and refined ran no seed in common: no paired comparison)", ""]
    paired = paired_difference([bc[s] for s in seeds], [refined[s] for s in seeds])  # refined - BC
    diff, (low, high), p_value = paired["difference"], paired["difference_ci95_newcombe"], paired["mcnemar_exact_p"]
    only_bc, only_refined = paired["only_baseline_succeeded"], paired["only_this_succeeded"]
    verdict = "beyond its interval" if low > 0 else ("worse beyond its interval" if high < 0 else "within its interval")
    return [
        f"Refined minus BC on the {len(seeds)} shared seeds: **{100 * diff:+.1f} points** (Newcombe 95 % "
        f"{100 * low:+.1f} .. {100 * high:+.1f}; {verdict}); seeds only the refined policy solved: {only_refined}, "
        f"only BC: {only_bc} (McNemar exact p = {p_value:.3g}).",
        "",
    ]


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
    from world4rl_policy.prediction import discrimination_line, read_gate, shift_line

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
        # Why the prediction says what it does: whether dreams judge single episodes, and whether PPO moved BC.
        if discrimination := prediction.get("calibration", {}).get("discrimination"):
            lines.append(f"- {discrimination_line(discrimination)}.")
        if "policy_shift" in prediction:
            lines.append(f"- {shift_line(prediction['policy_shift'])}.")
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
        *_difference_lines(run_dir / "deploy" / "bc.json", run_dir / "deploy" / "refined.json"),
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
    lines += _runtime_lines(run_dir)
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    write_html(run_dir, "\n".join(lines), title=f"World4RL demo: {task}")
    return report


def _runtime_lines(run_dir: Path) -> list[str]:
    """The speed settings each torch stage's processes recorded (RUN/STAGE/runtime.json)."""
    from world4rl_bringup.demo_cli import OUTPUTS, TORCH_STAGES, stage_runtime

    rows = []
    for name in [n for n in OUTPUTS if n in TORCH_STAGES]:  # in the order they run
        for proc, f in stage_runtime(run_dir, name).items():
            rows.append(
                f"| {name} | {proc} | {f.get('tcmalloc')} | {f.get('bf16')} | {f.get('threads')} "
                f"| {f.get('omp_wait_policy')} | {f.get('device')} |"
            )
    if not rows:
        return []
    head = ["## Speed settings of the training stages", ""]
    head += [
        "| stage | process | tcmalloc | bf16 | threads | OMP_WAIT_POLICY | device |",
        "|---|---|---|---|---|---|---|",
    ]
    return [*head, *rows, ""]


# ---------------------------------------------------------------------------------------- HTML page

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img, video { max-width: 100%; image-rendering: pixelated; display: block; margin: 0.4em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""
_IMG = re.compile(r'<img alt="([^"]*)" src="([^"]+)"\s*/?>')
_LINK = re.compile(r'<a href="([^"]+)">(.*?)</a>', re.S)


def write_html(run_dir: Path, markdown_text: str, title: str = "World4RL demo") -> Path:
    """RUN/report.html: `markdown_text` (the report, its paths relative to RUN) as one page that
    carries its pictures and videos inside (data URIs) and loads nothing from anywhere else."""
    import markdown

    body = _inline_media(run_dir, markdown.markdown(markdown_text, extensions=["tables"]))
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    out = run_dir / "report.html"
    out.write_text(page)  # as report.md: readable by whoever may read the run
    return out


def _local_file(run_dir: Path, ref: str) -> Path | None:
    """The file a relative link of the report names inside RUN (None for anything else)."""
    ref = html.unescape(ref)
    if re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.I) or ref.startswith(("/", "#")):
        return None
    path = (run_dir / ref).resolve()
    return path if path.is_file() and path.is_relative_to(run_dir.resolve()) else None


def _inline_media(run_dir: Path, body: str) -> str:
    """Pictures become data URIs; gifs and linked mp4s become inline videos; other links become their text."""
    shown: set[Path] = set()

    def image(m: re.Match) -> str:
        alt, path = m.group(1), _local_file(run_dir, m.group(2))
        if path is None:
            return alt
        shown.add(path)
        if path.suffix.lower() == ".gif":
            return _video_tag(_gif_to_mp4(path), alt)
        mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        return f'<img alt="{alt}" src="data:{mime};base64,{_b64(path.read_bytes())}">'

    def link(m: re.Match) -> str:
        path, text = _local_file(run_dir, m.group(1)), m.group(2)
        if path is not None and path.suffix.lower() == ".mp4" and path not in shown:
            shown.add(path)
            return f"{text}{_video_tag(_browser_mp4(path), text)}"
        return text  # shown above already, or a file (or site) the page does not carry

    return _LINK.sub(link, _IMG.sub(image, body))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _video_tag(mp4: bytes, title: str) -> str:
    title = html.escape(html.unescape(re.sub(r"<[^>]+>", "", title)))
    return (
        f'<video controls autoplay loop muted playsinline title="{title}">'
        f'<source type="video/mp4" src="data:video/mp4;base64,{_b64(mp4)}"></video>'
    )


def _browser_mp4(path: Path) -> bytes:
    """The mp4's bytes if browsers play it (H.264, yuv420p), else the frames re-encoded so."""
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    frames.close()
    if meta.get("codec") == "h264" and str(meta.get("pix_fmt", "")).startswith("yuv420p"):
        return path.read_bytes()
    import imageio.v2 as imageio

    return _encode_mp4(list(imageio.mimread(path, memtest=False)), float(meta.get("fps") or 5.0))


def _gif_to_mp4(path: Path) -> bytes:
    import imageio.v2 as imageio
    from PIL import Image

    with Image.open(path) as gif:
        fps = 1000.0 / max(1, int(gif.info.get("duration") or 200))
    return _encode_mp4(list(imageio.mimread(path, memtest=False)), fps)


def _encode_mp4(frames: list, fps: float) -> bytes:
    """H.264 yuv420p (what every browser plays): RGB frames padded to even sizes."""
    import imageio.v2 as imageio
    import numpy as np

    h, w = frames[0].shape[:2]
    padded = [np.pad(np.asarray(f)[..., :3], ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "video.mp4"
        imageio.mimwrite(out, padded, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, quality=8)
        return out.read_bytes()
