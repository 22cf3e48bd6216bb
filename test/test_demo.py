"""`world4rl demo`: stages run in order, are skipped once done, and can be redone."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _demo(out, *extra, demos="2"):
    cmd = [sys.executable, "-m", "world4rl_bringup.cli", "demo", "--out", str(out), "--demos", demos, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _episodes(out) -> int:
    return len(json.loads((out / "dataset" / "manifest.json").read_text())["episodes"])


def test_stages_resume_rerun_on_changed_settings_and_redo(ros_domain, tmp_path):
    out = tmp_path / "demo"
    first = _demo(out, "--until", "dataset")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[1/11] collect: running" in first.stdout
    assert "[2/11] dataset: running" in first.stdout
    assert _episodes(out) == 2
    assert set(json.loads((out / "timings.json").read_text())) == {"collect", "dataset"}

    # Another size whose collect and dataset command lines are the same (2 demonstrations, same
    # noise): nothing before the stages that differ reruns.
    same = _demo(out, "--until", "dataset", "--size", "full")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "[1/11] collect: done, skipped" in same.stdout
    assert "[2/11] dataset: done, skipped" in same.stdout

    # More demonstrations: collect reruns (its earlier bags kept aside), and the dataset built on them.
    more = _demo(out, "--until", "dataset", demos="3")
    assert more.returncode == 0, more.stdout + more.stderr
    rerun = "[1/11] collect: changed since it ran: setting commands: running again (earlier output kept in"
    assert rerun in more.stdout
    assert "[2/11] dataset: changed since it ran: stage collect ran again: running again" in more.stdout
    assert _episodes(out) == 3
    kept = sorted(p.name for p in (out / "superseded").iterdir())
    assert [k.split("-")[0] for k in kept] == ["collect", "dataset"]
    assert len(list((out / "superseded" / kept[0] / "bags").glob("ep_*"))) == 2

    again = _demo(out, "--until", "dataset", "--redo", "dataset", demos="3")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[1/11] collect: done, skipped" in again.stdout
    assert "[2/11] dataset: --redo: running again" in again.stdout
    assert _episodes(out) == 3


def test_unknown_stage_is_named(tmp_path):
    out = _demo(tmp_path / "demo", "--redo", "colect")
    assert out.returncode == 2
    assert "unknown stage 'colect'" in out.stderr


# The smallest demo that runs every stage: a few demonstrations, seconds of training, one deploy episode.
TINY = """\
demos: 6
expert_noise: 0.1
bc_steps: 10
reward_minutes: 0.1
world_model_minutes: 0.1
world_model_size: tiny
refine_steps: 64
deploy_episodes: 1
policy_episodes: 10
random_episodes: 1
"""


def test_tiny_demo_trains_with_the_speed_ups_logs_them_and_reports_on_one_page(
    ros_domain, tmp_path, check_self_contained_html
):
    from world4rl_bringup.demo_cli import OUTPUTS
    from world4rl_model.runtime import fast_bf16, find_tcmalloc

    sizes = tmp_path / "tiny.yaml"
    sizes.write_text(TINY)
    out = tmp_path / "demo"
    # As a user's shell starts it: nothing preloaded, OpenMP's default wait policy.
    env = {
        k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OMP_WAIT_POLICY", "WORLD4RL_TCMALLOC_REEXEC")
    }
    cmd = [sys.executable, "-m", "world4rl_bringup.cli", "demo", "--out", str(out), "--size", str(sizes)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == str(out / "report.html")

    # Every torch stage's child ran with tcmalloc (where installed: scripts/setup.sh), passive OpenMP
    # threads, and bf16 where it is faster (refine's imagination; see demo_cli.stages), and said so.
    tcmalloc, bf16, log = find_tcmalloc() is not None, fast_bf16(), (out / "demo.log").read_text()
    expected = {"bc": ("bc", False), "world_model": ("world-model", False), "reward": ("reward", False),
                "dream": ("eval", False), "refine": ("refine", bf16)}  # fmt: skip
    for stage, (process, half) in expected.items():
        said = f"{stage}: {process} ran with tcmalloc {tcmalloc}, bf16 {half}, "
        assert said in done.stdout, (said, done.stdout[-3000:])
        assert said in log
        recorded = json.loads((out / OUTPUTS[stage][0] / "runtime.json").read_text())[process]
        assert (recorded["tcmalloc"], recorded["bf16"], recorded["omp_wait_policy"]) == (tcmalloc, half, "PASSIVE")

    markdown = (out / "report.md").read_text()
    assert "## Speed settings of the training stages" in markdown
    assert "Do the dreams answer the actions?" in markdown  # the world model's action gain
    found = check_self_contained_html((out / "report.html").read_text(), markdown)
    assert len(found["videos"]) >= 2  # the dream (gif in the markdown) and refine's imagined episodes
    assert len(found["images"]) >= 3  # training curves
    for deploy in ("bc", "refined"):
        result = json.loads((out / "deploy" / f"{deploy}.json").read_text())
        assert f"{result['successes']}/{result['episodes']} = " in markdown
