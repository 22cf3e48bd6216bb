"""`world4rl demo`: stages run in order, are skipped once done, and can be redone."""

import json
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
    assert "[1/10] collect: running" in first.stdout
    assert "[2/10] dataset: running" in first.stdout
    assert _episodes(out) == 2
    assert set(json.loads((out / "timings.json").read_text())) == {"collect", "dataset"}

    # Another size whose collect and dataset command lines are the same (2 demonstrations, same
    # noise): nothing before the stages that differ reruns.
    same = _demo(out, "--until", "dataset", "--size", "full")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "[1/10] collect: done, skipped" in same.stdout
    assert "[2/10] dataset: done, skipped" in same.stdout

    # More demonstrations: collect reruns (its earlier bags kept aside), and the dataset built on them.
    more = _demo(out, "--until", "dataset", demos="3")
    assert more.returncode == 0, more.stdout + more.stderr
    rerun = "[1/10] collect: changed since it ran: setting commands: running again (earlier output kept in"
    assert rerun in more.stdout
    assert "[2/10] dataset: changed since it ran: stage collect ran again: running again" in more.stdout
    assert _episodes(out) == 3
    kept = sorted(p.name for p in (out / "superseded").iterdir())
    assert [k.split("-")[0] for k in kept] == ["collect", "dataset"]
    assert len(list((out / "superseded" / kept[0] / "bags").glob("ep_*"))) == 2

    again = _demo(out, "--until", "dataset", "--redo", "dataset", demos="3")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[1/10] collect: done, skipped" in again.stdout
    assert "[2/10] dataset: --redo: running again" in again.stdout
    assert _episodes(out) == 3


def test_unknown_stage_is_named(tmp_path):
    out = _demo(tmp_path / "demo", "--redo", "colect")
    assert out.returncode == 2
    assert "unknown stage 'colect'" in out.stderr
