"""The training harness on a tiny component (a linear fit): exact resume, the time limit, keeping N
checkpoints, TensorBoard, the single-process path and (slow) torchrun DDP against one process."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from world4rl_model.checkpoint import list_checkpoints, load_checkpoint, load_training_state
from world4rl_model.harness import Component, Harness, LoopSettings
from world4rl_model.runtime import derive_seed

TRUE_W = torch.tensor([[1.0], [-2.0], [0.5]])


class Line(Component):
    """y = x w + noise: x seeded by (seed, rank, step), the noise from a generator kept in state().

    `ranks` (default: this process's): draw the batches of these ranks, one after the other."""

    name = "line"
    ddp = True
    batch_size = 8

    def __init__(self, harness: Harness, sleep: float = 0.0, ranks: tuple[int, ...] | None = None):
        self.harness, self.sleep = harness, sleep
        self.ranks = ranks if ranks is not None else (harness.dist.rank,)
        self.model = nn.Linear(3, 1)  # the harness seeded the RNGs: the same weights in every run and process
        self.noise = [torch.Generator().manual_seed(1) for _ in self.ranks]
        self.validated: list[int] = []

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(self.sleep)
        xs, ys = [], []
        for rank, noise in zip(self.ranks, self.noise, strict=True):
            g = torch.Generator().manual_seed(derive_seed(self.harness.settings.seed, rank, step, "batch"))
            x = torch.randn(self.batch_size, 3, generator=g)
            xs.append(x)
            ys.append(x @ TRUE_W + 0.1 * torch.randn(self.batch_size, 1, generator=noise))
        return torch.cat(xs), torch.cat(ys)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        return loss, {"train/loss": loss.detach()}

    def validate(self, step: int) -> dict:
        self.validated.append(step)
        return {"val/weight_error": float((self.model.weight.detach().T - TRUE_W).abs().max())}

    def checkpoint_config(self, step: int) -> dict:
        return {"kind": "line", "step": step}

    def state(self) -> dict:
        return {"noise": [g.get_state() for g in self.noise]}

    def load_state(self, extra: dict) -> None:
        for g, state in zip(self.noise, extra["noise"], strict=True):
            g.set_state(state)


def _train(out: Path, component=Line, **settings) -> tuple[Line, int]:
    base = {"steps": 6, "checkpoint_every": 100, "progress": False, "threads": 1, "log_every": 1}
    with Harness(LoopSettings(out=str(out), **{**base, **settings})) as harness:
        c = component(harness)
        return c, harness.fit(c)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)[0]


def test_resume_equals_an_uninterrupted_run(tmp_path):
    kw = {"warmup_steps": 4, "grad_clip": 0.5, "val_every": 2}  # the LR schedule and clipping span the resume
    straight, step = _train(tmp_path / "a", **kw)
    assert step == 6
    assert straight.validated == [2, 4, 6]
    first, step = _train(tmp_path / "b", steps=3, **kw)
    assert (step, first.validated) == (3, [2, 3])  # the last step always validates and checkpoints
    resumed, step = _train(tmp_path / "b", **kw)
    assert (step, resumed.validated) == (6, [4, 6])
    for k, v in _weights(tmp_path / "a").items():
        torch.testing.assert_close(_weights(tmp_path / "b")[k], v, rtol=0, atol=0, msg=k)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [3, 6]
    assert load_training_state(tmp_path / "b").meta["scheduler"] is not None
    # A finished run is not trained further; resume=False starts afresh.
    assert _train(tmp_path / "b", **kw)[1] == 6
    fresh, step = _train(tmp_path / "b", steps=2, resume=False)
    assert step == 2
    assert not torch.equal(fresh.model.weight.detach(), _weights(tmp_path / "a")["weight"])


def test_time_limit_stops_checkpoints_and_counts_across_resumes(tmp_path):
    limit = {"max_minutes": 0.2 / 60, "steps": 1000}  # 0.2 s of training, 20 ms a step

    def slow(harness):
        return Line(harness, sleep=0.02)

    _, step = _train(tmp_path / "run", component=slow, **limit)
    assert 2 <= step < 100
    assert (tmp_path / "run" / "latest").read_text().strip() == f"step_{step:09d}"
    elapsed = load_training_state(tmp_path / "run").extra["elapsed_s"]
    assert elapsed >= 0.2
    # Resumed with the same limit: it is already spent, so one step and out.
    _, again = _train(tmp_path / "run", component=slow, **limit)
    assert again == step + 1
    assert load_training_state(tmp_path / "run").extra["elapsed_s"] > elapsed


def test_cpu_time_limit_counts_work_not_waiting_and_counts_across_resumes(tmp_path):
    class Busy(Line):
        """Each step burns 20 ms of CPU, or sleeps 20 ms (a job whose cores another job took)."""

        def __init__(self, harness: Harness, busy: bool):
            super().__init__(harness)
            self.busy = busy

        def batch(self, step: int):
            end = time.process_time() + 0.02
            while self.busy and time.process_time() < end:
                pass
            if not self.busy:
                time.sleep(0.02)
            return super().batch(step)

    limit = {"max_cpu_minutes": 0.3 / 60, "steps": 60}  # 0.3 s of CPU
    _, step = _train(tmp_path / "busy", component=lambda h: Busy(h, busy=True), **limit)
    assert 5 <= step < 40
    cpu = load_training_state(tmp_path / "busy").extra["cpu_s"]
    assert cpu >= 0.3
    _, again = _train(tmp_path / "busy", component=lambda h: Busy(h, busy=True), **limit)
    assert again == step + 1  # spent before the resume: one step and out
    assert load_training_state(tmp_path / "busy").extra["cpu_s"] > cpu
    # Sleeping costs the clock 1.2 s over 60 steps but hardly any CPU: every step runs.
    assert _train(tmp_path / "idle", component=lambda h: Busy(h, busy=False), **limit)[1] == 60


def test_keeps_the_newest_checkpoints(tmp_path):
    _train(tmp_path / "run", steps=5, checkpoint_every=1, keep_checkpoints=2)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [4, 5]
    assert load_checkpoint(tmp_path / "run")[1]["step"] == 5


def test_single_process_logs_to_tensorboard_without_a_process_group(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class NoDDP(Line):
        ddp = False

        def batch(self, step):
            assert not torch.distributed.is_initialized()
            assert self.harness.dist.world_size == 1
            return super().batch(step)

    _train(tmp_path / "run", component=NoDDP, steps=4, val_every=2, grad_clip=1.0, warmup_steps=2)
    (events,) = (tmp_path / "run" / "tb").glob("events.out.tfevents.*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert set(tags) == {"train/loss", "train/grad_norm", "train/lr", "train/samples_per_s", "val/weight_error"}


def test_a_non_finite_loss_stops_the_run(tmp_path):
    class Diverges(Line):
        def loss(self, batch):
            loss, logs = super().loss(batch)
            return loss * float("nan"), logs

    with pytest.raises(FloatingPointError, match="line loss is nan at step 1"):
        _train(tmp_path / "run", component=Diverges)


def test_a_component_may_step_its_optimizer_itself(tmp_path):
    class TwoSteps(Line):
        def optimizer(self):
            self.opt = super().optimizer()
            return self.opt

        def update(self, batch, step):
            for _ in range(2):
                loss, logs = self.loss(batch)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
            return logs

    _, step = _train(tmp_path / "run", component=TwoSteps, steps=3)
    assert step == 3
    _train(tmp_path / "plain", steps=3)
    assert not torch.allclose(_weights(tmp_path / "run")["weight"], _weights(tmp_path / "plain")["weight"])
    assert load_training_state(tmp_path / "run").meta["optimizer"]["state"]  # the optimizer it stepped was saved


def ddp_worker(out: str) -> None:
    """torchrun's entry (see the test below): the tiny fit in two processes."""
    _train(Path(out), steps=5)


@pytest.mark.slow
def test_torchrun_ddp_averages_gradients_like_one_process_on_both_batches(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('harness_test', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.ddp_worker(sys.argv[2])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD4RL_NO_TCMALLOC": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), __file__, str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def both_ranks(harness):
        return Line(harness, ranks=(0, 1))

    # DDP averages the two processes' gradients: one process on both batches takes the same steps.
    _train(tmp_path / "one", component=both_ranks, steps=5)
    ddp, one = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    assert load_checkpoint(tmp_path / "ddp")[1]["step"] == 5
    for k in ddp:
        torch.testing.assert_close(ddp[k], one[k], msg=k)
    alone = Path(tmp_path / "alone")
    _train(alone, steps=5)  # and not the steps of rank 0's batches alone
    assert not torch.allclose(_weights(alone)["weight"], ddp["weight"])
