"""The stage engine: skip when done with the same settings, rerun on a changed setting or a rerun
upstream (and say why), move a rerun's earlier output aside, --redo, --only, and old books."""

import hashlib
import json

from world4rl_bringup.stages import Stages


def _pipeline(root, n: int, lr: float, log: list, **kwargs) -> Stages:
    stages = Stages(root, log=log.append, **kwargs)

    def data():
        out = root / "data"
        out.mkdir(exist_ok=True)
        for i in range(n):
            (out / f"{i}.txt").touch()  # a data stage tops up
        return {"episodes": n}

    def train():
        out = root / "model"
        assert not out.exists(), "a rerun must start from scratch"
        out.mkdir()
        (out / "weights").write_text(f"lr={lr}")

    stages.run("data", {"n": n}, data)
    stages.run("train", {"lr": lr}, train, after=["data"], fresh=[root / "model"])
    return stages


def test_a_changed_setting_reruns_its_stage_and_what_builds_on_it(tmp_path):
    log: list[str] = []
    assert _pipeline(tmp_path, 2, 0.1, log).ran == ["data", "train"]
    assert _pipeline(tmp_path, 2, 0.1, log).ran == []
    assert log[-2:] == ["data: done, skipped", "train: done, skipped"]

    log.clear()
    assert _pipeline(tmp_path, 2, 0.2, log).ran == ["train"]
    assert log[0] == "data: done, skipped"
    assert log[1].startswith("train: changed since it ran: setting lr: running again (earlier output kept in ")
    (first,) = (tmp_path / "superseded").iterdir()
    assert (first / "model" / "weights").read_text() == "lr=0.1"  # moved aside, not deleted
    assert (tmp_path / "model" / "weights").read_text() == "lr=0.2"

    log.clear()
    assert _pipeline(tmp_path, 3, 0.2, log).ran == ["data", "train"]
    assert log[0] == "data: changed since it ran: setting n: running again"
    assert log[2].startswith("train: changed since it ran: stage data ran again: running again")
    assert len(list((tmp_path / "superseded").iterdir())) == 2
    book = json.loads((tmp_path / "stages.json").read_text())
    assert book["data"]["episodes"] == 3
    assert book["train"]["after"] == {"data": book["data"]["run_id"]}


def test_redo_and_only(tmp_path):
    log: list[str] = []
    _pipeline(tmp_path, 1, 0.1, log)
    log.clear()
    assert _pipeline(tmp_path, 1, 0.1, log, redo=["data"]).ran == ["data", "train"]  # train builds on it
    assert log[0] == "data: --redo: running again"
    assert _pipeline(tmp_path, 1, 0.5, log, only=["data"]).ran == []  # train has changed, but is not asked for
    assert _pipeline(tmp_path, 1, 0.5, log, only=["train"]).ran == ["train"]


def test_a_book_written_before_upstream_tracking_still_counts_as_done(tmp_path):
    settings = {"n": 2}
    legacy = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    (tmp_path / "stages.json").write_text(
        json.dumps({"data": {"done": True, "settings_sha256": legacy, "settings": settings, "seconds": 1.0}})
    )
    log: list[str] = []
    stages = Stages(tmp_path, log=log.append)
    assert not stages.run("data", settings, lambda: None)
    assert stages.run("data", {"n": 3}, lambda: None)


def test_a_stage_books_its_wall_and_cpu_time(tmp_path):
    import time

    stages = Stages(tmp_path, log=lambda text: None)

    def busy():
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass

    stages.run("busy", {}, busy)
    stages.run("idle", {}, lambda: time.sleep(0.3))
    book = json.loads((tmp_path / "stages.json").read_text())
    assert book["busy"]["cpu_seconds"] >= 0.3
    assert book["idle"]["seconds"] >= 0.3
    assert book["idle"]["cpu_seconds"] < 0.2  # waiting costs no CPU: the budget counts CPU, not the clock


def test_turning_the_progress_bar_off_or_on_reruns_nothing(tmp_path):
    log: list[str] = []
    stages = Stages(tmp_path, log=log.append)
    assert stages.run("train", {"lr": 0.1, "progress": True}, lambda: None)
    again = Stages(tmp_path, log=log.append)
    assert not again.run("train", {"lr": 0.1, "progress": False}, lambda: None)
    assert log[-1] == "train: done, skipped"
    assert again.run("train", {"lr": 0.2, "progress": False}, lambda: None)
    assert log[-2] == "train: changed since it ran: setting lr: running again"


_STOPPED_ATTEMPT = """
import sys, time
from pathlib import Path
from world4rl_bringup.stages import Stages

def busy():
    while True:  # until killed
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass

redo = ["train"] if sys.argv[3:] == ["redo"] else []
stages = Stages(Path(sys.argv[1]), log=lambda text: None, heartbeat_s=0.1, redo=redo)
stages.run("train", {"lr": float(sys.argv[2])}, busy)
"""


def _stopped_attempt(root, lr: float, cpu_seconds: float, *extra: str) -> dict:
    """Run stage 'train' in a child process and kill it (SIGKILL: no chance to tidy up) once its
    heartbeat has booked `cpu_seconds`; -> the partial record it left (wall and CPU seconds)."""
    import subprocess
    import sys

    from world4rl_testing import wait_until

    child = subprocess.Popen([sys.executable, "-c", _STOPPED_ATTEMPT, str(root), str(lr), *extra])
    partial = root / "stages_partial.json"

    def booked() -> float:
        try:
            return json.loads(partial.read_text())["train"]["cpu_seconds"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return 0.0

    try:
        assert wait_until(lambda: booked() >= cpu_seconds, timeout=60.0)
    finally:
        child.kill()
        child.wait()
    return json.loads(partial.read_text())["train"]


def test_a_stage_stopped_midway_books_the_stopped_attempts_time_when_it_finishes(tmp_path):
    """A pipeline killed during a stage and started again: the stage's booked time holds both
    attempts (the stopped one to within a heartbeat); a changed setting or --redo starts from zero."""
    stopped = _stopped_attempt(tmp_path, 0.1, 0.5)
    log: list[str] = []
    Stages(tmp_path, log=log.append).run("train", {"lr": 0.1}, lambda: None)
    book = json.loads((tmp_path / "stages.json").read_text())
    assert stopped["cpu_seconds"] >= 0.5
    # The book keeps tenths of a second: both attempts, rounded, are at least the stopped one, rounded.
    # Wall and CPU are compared each with its own kind: a process's CPU time (all its threads, the
    # kernel's work for it) can run ahead of the wall clock.
    assert book["train"]["cpu_seconds"] >= round(stopped["cpu_seconds"], 1)
    assert book["train"]["seconds"] >= round(stopped["seconds"], 1)
    assert book["train"]["attempts"] == 2
    assert "train" not in json.loads((tmp_path / "stages_partial.json").read_text())  # the book has it now

    # Stopped with one setting, finished with another: the stopped attempt made something else.
    other = tmp_path / "other"
    other.mkdir()
    _stopped_attempt(other, 0.1, 0.3)
    Stages(other, log=log.append).run("train", {"lr": 0.2}, lambda: None)
    book = json.loads((other / "stages.json").read_text())
    assert book["train"]["cpu_seconds"] < 0.2
    assert "attempts" not in book["train"]

    # --redo moves the earlier output aside: a stopped redo's time does not carry into the next redo.
    _stopped_attempt(tmp_path, 0.1, 0.3, "redo")
    Stages(tmp_path, log=log.append, redo=["train"]).run("train", {"lr": 0.1}, lambda: None)
    assert json.loads((tmp_path / "stages.json").read_text())["train"]["cpu_seconds"] < 0.2
