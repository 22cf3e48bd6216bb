"""The one training loop of the project: world model, reward classifier, BC and PPO all train through it.

DIAMOND-style: a trainer describes what it trains as a small `Component`, and `Harness.fit` runs the
loop around it. The harness owns what every trainer needs and nothing model-specific:

- process setup: torchrun's process group (gloo on CPU, nccl on CUDA; `world4rl_model.runtime`),
  device, torch threads, seeding, and the teardown;
- the optimiser step (zero_grad, backward, grad clipping, step, LR warmup) of `component.loss`,
  through DistributedDataParallel when torchrun started several processes;
- the process's speed settings (tcmalloc, bf16, threads) in RUN/runtime.json and the log;
- the time limits (`max_minutes` of the clock, `max_cpu_minutes` of the CPU, both counted across
  resumes), TensorBoard scalars, periodic validation, checkpoints (`world4rl_model.checkpoint`:
  step_N/ + `latest`, the newest N kept), resume from the run's latest checkpoint, and the progress
  bar.

A component (subclass `Component`)::

    model                      the nn.Module trained; its state_dict is the checkpoint's weights
    optimizer() -> Optimizer   over model's parameters
    batch(step) -> batch       the batch of 0-based step `step`: the same on resume (seed it with
                               `harness.generator(step, tag)`, or keep its generator in state())
    loss(batch) -> (loss, logs)        logs: TensorBoard tag -> scalar (tensor or float)
    update(batch, step) -> logs        instead of loss: a component that steps its optimizer itself
                                       (PPO's epochs over one rollout)
    validate(step) -> metrics          on the main process: tag -> float, or a uint8 [3, H, W] image
    checkpoint_config(step) -> dict    config.json of the checkpoint saved after `step`
    state() -> dict / load_state(extra)   what else a resumed run needs (JSON-able or tensors)

Step numbers are optimiser steps done (PPO: updates); checkpoints are named after them. A resumed run
continues exactly where an uninterrupted run would have been: the optimiser, LR schedule, step and
component state come back, and batches are drawn from generators seeded by (seed, rank, step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from world4rl_model.checkpoint import (
    capture_training_state,
    latest_checkpoint,
    load_checkpoint,
    load_training_state,
    restore_training_state,
    save_run_checkpoint,
)
from world4rl_model.runtime import (
    configure_threads,
    derive_seed,
    describe_runtime,
    init_distributed,
    record_runtime,
    resolve_device,
    runtime_facts,
    seed_everything,
    shutdown_distributed,
)


@dataclass
class LoopSettings:
    """What the loop needs from a trainer's config; `from_config` reads the config's fields of these names."""

    out: str  # run directory: step_*/ checkpoints, `latest`, tb/
    steps: int  # optimiser steps in total (a resumed run continues up to this)
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    threads: int | None = None  # torch threads per process (None: the cores split across local processes)
    max_minutes: float | None = None  # stop (and checkpoint) after this much training time, resumes included
    # stop after this much CPU time of the process (all its threads), resumes included: a budget that
    # does not shrink when other jobs share the cores (the wall clock's does)
    max_cpu_minutes: float | None = None
    log_every: int = 20  # TensorBoard scalars of the training batches every N steps (and at step 1)
    val_every: int = 0  # validate every N steps (0: only at the end); always at the last step
    checkpoint_every: int = 1000  # always at the last step
    keep_checkpoints: int = 3  # step_* checkpoints kept (the newest)
    grad_clip: float | None = None  # clip the gradient norm to this (None or 0: no clipping)
    warmup_steps: int | None = None  # linear LR warmup over N steps (None: no LR schedule)
    resume: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> LoopSettings:
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if hasattr(config, f.name)}
        return cls(**{**values, **overrides})


class Component:
    """What a trainer hands the harness (see the module doc); subclasses set `model` and the methods."""

    name = "train"  # progress bar and log prefix
    kind: str | None = None  # the checkpoints' "kind": a run of another kind is refused on resume
    ddp = False  # True: may run under torchrun (DDP averages the gradients of `loss` across processes)
    batch_size: int | None = None  # samples per step and process: logs train/samples_per_s
    progress_tags: tuple[str, ...] = ()  # logged tags shown on the progress bar (default: the train/ ones)
    tb_step_scale = 1  # TensorBoard x of step s is s * tb_step_scale (PPO: imagined transitions)
    update = None  # or a method update(batch, step) -> logs that steps the optimizer itself
    bf16 = False  # whether it computes under bf16 autocast: recorded in the run's runtime.json and logged
    model: nn.Module

    def optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def batch(self, step: int) -> Any:
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def validate(self, step: int) -> dict[str, Any]:
        return {}

    def checkpoint_config(self, step: int) -> dict[str, Any]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, extra: dict[str, Any]) -> None:
        pass


class _LossModule(nn.Module):
    """forward() = the component's loss, so that DDP's hooks see the whole computation."""

    def __init__(self, component: Component):
        super().__init__()
        self.model = component.model
        self.component = component

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.component.loss(batch)


class Harness:
    """One training run: process setup when created, `fit(component)` the loop, teardown on exit (a `with` block).

    Created before the component, so that the component can use `device`, `dist` (rank), `checkpoint`
    (the run's latest, to resume from, or None: read its config.json to rebuild the model; `fit` loads
    the weights), `training_state` and `start_step` while it builds its data and model; the global RNGs
    are already seeded then.
    """

    def __init__(self, settings: LoopSettings):
        self.settings = settings
        self.dist = init_distributed(settings.device if settings.device != "auto" else "cpu")
        try:
            self.device = resolve_device(settings.device, self.dist)
            self.threads = configure_threads(settings.threads, self.dist)
            seed_everything(settings.seed)
            self.run_dir = Path(settings.out)
            self.checkpoint = latest_checkpoint(self.run_dir) if settings.resume else None
            self.training_state = load_training_state(self.checkpoint) if self.checkpoint is not None else None
        except BaseException:
            shutdown_distributed()
            raise
        self.start_step = self.training_state.step if self.training_state is not None else 0
        extra = self.training_state.extra if self.training_state else {}
        self.elapsed_before = float(extra.get("elapsed_s", 0.0))
        self.cpu_before = float(extra.get("cpu_s", 0.0))
        self._bar: Any = None
        self._writer: Any = None
        self._sched: Any = None
        self._window = (0.0, 0)  # (time, samples) since the last logged rate

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown_distributed()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def generator(self, step: int, tag: str, device: str | torch.device = "cpu") -> torch.Generator:
        """A generator seeded by (seed, rank, step, tag): the same draws for a step, resumed or not."""
        seed = derive_seed(self.settings.seed, self.dist.rank, step, tag)
        return torch.Generator(device=device).manual_seed(seed)

    def resuming(self) -> str:
        """The end of a log line saying which checkpoint the run resumes from ("" when it starts afresh)."""
        return f"; resuming {self.checkpoint.name} at step {self.start_step}" if self.checkpoint is not None else ""

    def write(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        (self._bar.write if self._bar is not None else print)(text)

    # ------------------------------------------------------------------------------ the loop

    def fit(self, c: Component) -> int:
        """Train `c` from the run's latest checkpoint (or from scratch) to `steps`; returns the step reached."""
        s = self.settings
        if self.dist.enabled and not c.ddp:
            raise ValueError(f"{c.name} trains in a single process: run it without torchrun")
        opt = c.optimizer()
        if s.warmup_steps is not None:
            warmup = max(1, s.warmup_steps)
            self._sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))
        step = self._restore(c, opt)
        c.model.train()
        net = torch.nn.parallel.DistributedDataParallel(_LossModule(c)) if self.dist.enabled else c.loss
        self._open_logs(c, step)
        start, cpu_start = time.monotonic(), time.process_time()
        self._window = (start, 0)
        try:
            while step < s.steps:
                logs = self._train_step(c, net, opt, step)
                step += 1
                self._window = (self._window[0], self._window[1] + (c.batch_size or 0))
                elapsed = self.elapsed_before + time.monotonic() - start
                cpu = self.cpu_before + time.process_time() - cpu_start
                stop = self._out_of_time(elapsed, cpu)
                if self.is_main:
                    self._after_step(c, opt, step, logs, (elapsed, cpu), final=step >= s.steps or stop)
                if stop:
                    break
        finally:
            self._bar.close()
            if self._writer is not None:
                self._writer.close()
        if self.dist.enabled:
            torch.distributed.barrier()
        return step

    def _train_step(self, c: Component, net: Any, opt: torch.optim.Optimizer, step: int) -> dict[str, Any]:
        batch = c.batch(step)
        if c.update is not None:
            return c.update(batch, step)
        loss, logs = net(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        logs = dict(logs)
        if self.settings.grad_clip is not None and self.settings.grad_clip > 0:
            logs["train/grad_norm"] = torch.nn.utils.clip_grad_norm_(c.model.parameters(), self.settings.grad_clip)
        opt.step()
        if self._sched is not None:
            self._sched.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"{c.name} loss is {value} at step {step + 1}")
        return logs

    def _out_of_time(self, elapsed: float, cpu: float) -> bool:
        s = self.settings
        stop = s.max_minutes is not None and elapsed >= s.max_minutes * 60
        stop = stop or (s.max_cpu_minutes is not None and cpu >= s.max_cpu_minutes * 60)
        if self.dist.enabled:  # every rank stops at the same step
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _after_step(
        self,
        c: Component,
        opt: torch.optim.Optimizer,
        step: int,
        logs: dict[str, Any],
        spent: tuple[float, float],
        final: bool,
    ) -> None:
        """The main process's work after a step: log, validate, checkpoint."""
        s = self.settings
        self._bar.update(1)
        if step % s.log_every == 0 or step == 1:
            self._log_train(c, step, logs)
        if final or (s.val_every and step % s.val_every == 0):
            self._validate(c, step)
        if final or step % s.checkpoint_every == 0:
            extra = {"elapsed_s": spent[0], "cpu_s": spent[1], **c.state()}
            ts = capture_training_state(step, opt, self._sched, extra=extra, include_rng=False)
            config = c.checkpoint_config(step)
            save_run_checkpoint(self.run_dir, step, c.model.state_dict(), config, ts, keep=s.keep_checkpoints)
        self._writer.flush()

    # ------------------------------------------------------------------------------ resume, logs

    def _restore(self, c: Component, opt: torch.optim.Optimizer) -> int:
        """Weights, optimizer, LR schedule, component state and step of the run's latest checkpoint."""
        if self.checkpoint is None:
            return 0
        weights, _ = load_checkpoint(self.checkpoint, map_location=self.device, kind=c.kind)
        c.model.load_state_dict(weights)
        ts = self.training_state
        if ts is None:
            return 0
        step = restore_training_state(ts, opt, self._sched, restore_rng=False)
        c.load_state(ts.extra)
        return step

    def _open_logs(self, c: Component, step: int) -> None:
        from tqdm import tqdm

        s = self.settings
        show = self.is_main and s.progress
        self._bar = tqdm(total=s.steps, initial=step, desc=c.name, disable=not show, dynamic_ncols=True)
        if not self.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        facts = runtime_facts(self.device, self.threads, c.bf16)
        record_runtime(self.run_dir, c.name, facts)
        print(f"[{c.name}] runtime: {describe_runtime(facts)}", file=sys.stderr, flush=True)  # stdout: results
        purge = step * c.tb_step_scale if step else None
        self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)
        config = json.dumps(c.checkpoint_config(step), indent=1, default=str)
        self._writer.add_text("config", "```\n" + config + "\n```")

    def _log_train(self, c: Component, step: int, logs: dict[str, Any]) -> None:
        values = {k: float(v) for k, v in logs.items()}
        now = time.monotonic()
        then, samples = self._window
        if c.batch_size:
            values["train/samples_per_s"] = samples * self.dist.world_size / max(now - then, 1e-9)
        self._window = (now, 0)
        if self._sched is not None:
            values["train/lr"] = self._sched.get_last_lr()[0]
        self._scalars(c, step, values)
        shown = c.progress_tags or [k for k in values if k.startswith("train/")]
        self._bar.set_postfix({k.rsplit("/", 1)[-1]: f"{values[k]:.4g}" for k in shown if k in values}, refresh=False)

    def _validate(self, c: Component, step: int) -> None:
        metrics = c.validate(step)
        images = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor) and v.dim() == 3}
        values = {k: float(v) for k, v in metrics.items() if k not in images}
        for tag, image in images.items():
            self._writer.add_image(tag, image, step * c.tb_step_scale)
        self._scalars(c, step, values)
        if values and self.settings.progress:
            self.write(f"[{c.name}] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))

    def _scalars(self, c: Component, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            if not math.isnan(value):
                self._writer.add_scalar(tag, value, step * c.tb_step_scale)
