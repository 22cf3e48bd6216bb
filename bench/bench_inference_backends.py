"""CPU inference backends measured in one run: eager torch (fp32, channels_last, bf16 autocast), ONNX
Runtime and OpenVINO, for the world model's denoiser step, the reward classifier and the policy.

Exported with torch.onnx.export from the loaded weights: the denoiser step D(x; sigma) (preconditioning,
noise and action conditioning, U-Net) with WorldModel.encode_context's cache as inputs (the context
features and the action embedding, computed once per imagined step in torch, as the sampler does), the
classifier's P(success | frame, task) and the policy's (mean, log-std, value). Every backend gets the
same inputs and threads; rounds are interleaved so that load drift hits all alike; ratios are against
eager torch fp32 measured in the same run.

1. Per-call latency at batch 64 (imagination) and batch 1 (the runtime node), with the largest
   |output - torch fp32| on real inputs (both sampler steps for the denoiser).
2. WorldModelEnv.step (64 envs, the sampler's Euler steps + the classifier) per backend: imagined
   transitions/s, and how far its imagined frames (grey levels) and success probabilities are from
   torch fp32's for the same seed.
3. OpenVINO aborts when tcmalloc is preloaded (glibc "free(): invalid size" at read_model), so this
   process runs with glibc malloc; child processes measure the env step of the production path
   (torch with tcmalloc) against the backends that cannot have it, alternating.

    .venv/bin/python bench/bench_inference_backends.py [--quick] [--rounds N]
        [--world-model CKPT --reward CKPT --policy CKPT --dataset DIR]

Without checkpoints the models are the default presets with random weights (timing does not depend on
the weights; their zero-initialised layers get small random values so that the differences mean
something) on the synthetic square world. Writes bench/results/inference_backends.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
INPUTS = {
    "denoiser": ("x", "sigma", "features", "action_embedding"),
    "reward": ("frames", "task"),
    "policy": ("frames",),
}
OUTPUTS = {"denoiser": ("denoised",), "reward": ("probability",), "policy": ("mean", "log_std", "value")}


@dataclass(frozen=True)
class Backend:
    name: str
    kind: str  # torch | onnxruntime | openvino
    channels_last: bool = False
    bf16: bool = False
    static: bool = False  # shapes fixed to the batch at export (onnxruntime) or compile (openvino)
    options: dict = field(default_factory=dict, hash=False)


BACKENDS = [
    Backend("torch fp32", "torch"),
    Backend("torch fp32 channels_last", "torch", channels_last=True),
    Backend("torch bf16 autocast channels_last", "torch", channels_last=True, bf16=True),
    Backend("onnxruntime fp32 (all graph optimisations)", "onnxruntime"),
    Backend("onnxruntime fp32, spinning threads", "onnxruntime", options={"spin": True}),
    Backend("onnxruntime fp32, static batch", "onnxruntime", static=True),
    Backend("openvino (plugin defaults: bf16 on this CPU)", "openvino"),
    Backend("openvino f32, static batch", "openvino", static=True, options={"INFERENCE_PRECISION_HINT": "f32"}),
    Backend("openvino defaults, static batch", "openvino", static=True),
    Backend("openvino LATENCY hint, static batch", "openvino", static=True, options={"PERFORMANCE_HINT": "LATENCY"}),
    Backend(
        "openvino THROUGHPUT hint, static batch", "openvino", static=True, options={"PERFORMANCE_HINT": "THROUGHPUT"}
    ),
]
BY_NAME = {b.name: b for b in BACKENDS}
# Child processes of table 3: (label, backend, tcmalloc).
PROCESS_VARIANTS = [
    ("torch bf16 autocast channels_last + tcmalloc (production, --bf16)", "torch bf16 autocast channels_last", True),
    ("torch bf16 autocast channels_last, glibc malloc", "torch bf16 autocast channels_last", False),
    ("openvino defaults (bf16), static batch, glibc malloc", "openvino defaults, static batch", False),
    ("torch fp32 channels_last + tcmalloc (production without --bf16)", "torch fp32 channels_last", True),
    ("openvino f32, static batch, glibc malloc", "openvino f32, static batch", False),
    ("onnxruntime fp32 + tcmalloc", "onnxruntime fp32 (all graph optimisations)", True),
]


# ---- what is exported ------------------------------------------------------------------------------
def export_modules(wm, rm, policy):
    import torch
    from torch import nn

    class DenoiserStep(nn.Module):
        """WorldModel.forward for an AdaGN U-Net, given encode_context's cache: one sampler step's call."""

        def __init__(self):
            super().__init__()
            self.wm = wm

        def forward(self, x, sigma, features, action_embedding):
            coeffs = self.wm.preconditioning(sigma)
            c_skip, c_out, c_in, _ = (v.view(-1, 1, 1, 1) for v in coeffs)
            cond = self.wm.condition(coeffs[3], None, action_embedding)
            return c_skip * x + c_out * self.wm.net(c_in * x, cond, features).float()

    class RewardProbability(nn.Module):
        def __init__(self):
            super().__init__()
            self.rm = rm

        def forward(self, frames, task):
            return torch.sigmoid(self.rm(frames, task).float())

    class PolicyHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, frames):
            return self.policy(frames)

    return {"denoiser": DenoiserStep().eval(), "reward": RewardProbability().eval(), "policy": PolicyHeads().eval()}


def export_onnx(module, args: tuple, net: str, path: Path, dynamic: bool) -> Path:
    import warnings

    import torch

    if not path.exists():
        axes = {n: {0: "batch"} for n in INPUTS[net] + OUTPUTS[net]} if dynamic else None
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape checks
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(INPUTS[net]),
                output_names=list(OUTPUTS[net]),
                dynamic_axes=axes,
                opset_version=18,
                dynamo=False,
            )
    return path


# ---- backends --------------------------------------------------------------------------------------
def torch_runner(backend: Backend, module):
    import torch

    m = copy.deepcopy(module)
    if backend.channels_last:
        m = m.to(memory_format=torch.channels_last)
        if hasattr(m, "wm"):
            m.wm.use_channels_last()

    def run(*args):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=backend.bf16):
            out = m(*args)
        return tuple(o.float() for o in (out if isinstance(out, tuple) else (out,)))

    return run


def _numpy(args) -> list:
    import numpy as np

    return [np.ascontiguousarray(a.numpy()) for a in args]


def onnxruntime_runner(backend: Backend, path: Path, names, threads: int):
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if backend.options.get("spin") else "0")
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(*args):
        return tuple(torch.from_numpy(o) for o in session.run(None, dict(zip(names, _numpy(args), strict=True))))

    return run


def openvino_runner(backend: Backend, path: Path, names, threads: int, shapes=None):
    import numpy as np
    import openvino as ov
    import torch

    core = ov.Core()
    model = core.read_model(str(path))
    if shapes is not None:
        model.reshape(dict(zip(names, shapes, strict=True)))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, **backend.options})
    request = compiled.create_infer_request()

    def run(*args):
        out = request.infer(dict(zip(names, _numpy(args), strict=True)))
        return tuple(torch.from_numpy(np.asarray(v)) for v in out.to_tuple())

    return run


def make_runner(backend: Backend, net: str, module, args: tuple, threads: int, cache: Path):
    if backend.kind == "torch":
        return torch_runner(backend, module)
    batch = args[0].shape[0]
    static_onnx = backend.static and backend.kind == "onnxruntime"
    path = export_onnx(module, args, net, cache / f"{net}{f'_b{batch}' if static_onnx else ''}.onnx", not static_onnx)
    if backend.kind == "onnxruntime":
        return onnxruntime_runner(backend, path, INPUTS[net], threads)
    shapes = [list(a.shape) for a in args] if backend.static else None
    return openvino_runner(backend, path, INPUTS[net], threads, shapes)


def available(backends: list[Backend]) -> list[Backend]:
    import importlib.util

    return [b for b in backends if b.kind == "torch" or importlib.util.find_spec(b.kind) is not None]


# ---- models and real inputs ------------------------------------------------------------------------
def load_models(args):
    """(world model, classifier, policy, dataset) from checkpoints, or random ones on the square world."""
    import torch

    from world4rl_model.dataset import Dataset
    from world4rl_model.reward import RewardClassifier, RewardConfig
    from world4rl_model.world_model import WorldModel, preset_config
    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, load_policy_module

    if args.world_model:
        wm = WorldModel.from_checkpoint(args.world_model)[0]
        rm = RewardClassifier.from_checkpoint(args.reward)[0]
        policy = load_policy_module(args.policy)[0]
        return wm, rm, policy, Dataset(args.dataset)
    from world4rl_model.synthetic import make_dataset

    ds = make_dataset(
        Path(tempfile.mkdtemp(prefix="bench_backends_")) / "ds", episodes_per_task=2, length=8, image_size=64
    )
    torch.manual_seed(0)
    wm, rm = WorldModel(preset_config("default")), RewardClassifier(RewardConfig(tasks=list(ds.tasks)))
    policy = GaussianPolicy(PolicyConfig())
    with torch.no_grad():
        for p in [*wm.parameters(), *rm.parameters(), *policy.parameters()]:
            if not p.any():  # zero-initialised output layers: the differences would be trivially 0
                p.normal_(0, 0.02)
    return wm.eval(), rm.eval(), policy.eval(), ds


def real_inputs(wm, env, batch: int, steps: int) -> dict[str, list[tuple]]:
    """Inputs of each network from an env reset on real frames: the denoiser's for each sampler step
    (the later ones from torch fp32's own Euler steps), the classifier's and the policy's."""
    import torch

    frames, actions = env.frames[:batch], env.actions[:batch].clone()
    actions[:, -1] = torch.rand(batch, actions.shape[-1], generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        cache = wm.encode_context(frames, actions)
        sigmas = wm.sampling_sigmas(steps)
        x = torch.randn(frames.shape[0], 3, wm.config.image_size, wm.config.image_size) * sigmas[0]
        denoiser = []
        for i in range(steps):
            s = sigmas[i].expand(batch).contiguous()
            denoiser.append((x, s, cache["features"], cache["action_embedding"]))
            d = wm(x, s, frames, actions, cache)
            x = d if sigmas[i + 1] == 0 else x + (x - d) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    policy_frames = env._obs()["frames"][:batch].contiguous()
    return {"denoiser": denoiser, "reward": [(env.frames[:batch, -1], env.task[:batch])], "policy": [(policy_frames,)]}


# ---- timing ----------------------------------------------------------------------------------------
def interleaved(fns: dict, rounds: int, calls: int, log=None) -> dict[str, list[float]]:
    """Seconds per call of each fn, one entry per round; every round runs every fn once in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[k].append((time.perf_counter() - t0) / calls)
            if log:
                log(f"round {r}: {k}: {times[k][-1] * 1e3:.2f} ms")
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"best_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3, "spread": max(times) / min(times)}


def max_diff(outs, refs) -> float:
    return max(float((o.float() - r.float()).abs().max()) for o, r in zip(outs, refs, strict=True))


# ---- table 1: per-call latency ---------------------------------------------------------------------
def per_call_table(backends, modules, inputs, threads: int, cache: Path, args, log=print) -> list[dict]:
    rows = []
    for net in ("denoiser", "reward", "policy"):
        for batch in (args.batch, 1):
            sets = [tuple(a[:batch] for a in s) for s in inputs[net]]
            runners = {b.name: make_runner(b, net, modules[net], sets[0], threads, cache) for b in backends}
            refs = [runners["torch fp32"](*s) for s in sets]
            diffs = {k: max(max_diff(fn(*s), r) for s, r in zip(sets, refs, strict=True)) for k, fn in runners.items()}
            t0 = time.perf_counter()
            runners["torch fp32"](*sets[0])
            calls = max(1, round(args.call_seconds / (time.perf_counter() - t0)))
            fns = {k: (lambda fn=fn, a=sets[0]: fn(*a)) for k, fn in runners.items()}
            times = interleaved(fns, args.rounds, calls)
            base = summary(times["torch fp32"])
            for k in runners:
                s = summary(times[k])
                rows.append(
                    {
                        "network": net,
                        "batch": batch,
                        "backend": k,
                        **{m: round(v, 3) for m, v in s.items()},
                        "vs_torch_fp32_best": round(base["best_ms"] / s["best_ms"], 2),
                        "vs_torch_fp32_median": round(base["median_ms"] / s["median_ms"], 2),
                        "max_abs_diff": float(f"{diffs[k]:.3g}"),
                    }
                )
                log(
                    f"{net} batch {batch}: {k}: best {s['best_ms']:.2f} ms, median {s['median_ms']:.2f} ms, "
                    f"x{rows[-1]['vs_torch_fp32_best']} (max diff {diffs[k]:.2g})"
                )
            del runners, fns
    return rows


# ---- table 2: the env step -------------------------------------------------------------------------
class BackendSampler:
    """Stands in for the WorldModel inside WorldModelEnv: WorldModel.sample, the step on a backend."""

    def __init__(self, wm, denoise):
        self.wm, self.denoise, self.config = wm, denoise, wm.config

    def sample(self, frames, actions, steps=None, generator=None, quantize=None):
        import torch

        from world4rl_model.world_model import quantize_frames

        wm, c = self.wm, self.config
        steps = c.sampling_steps if steps is None else steps
        sigmas, b = wm.sampling_sigmas(steps), frames.shape[0]
        x = torch.randn((b, 3, c.image_size, c.image_size), generator=generator) * sigmas[0]
        cache = wm.encode_context(frames, actions)
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            (denoised,) = self.denoise(x, s.expand(b).contiguous(), cache["features"], cache["action_embedding"])
            x = denoised if s_next == 0 else x + (x - denoised) / s * (s_next - s)
        x = wm._to_frame(x, frames).clamp(-1, 1)
        return quantize_frames(x) if (c.quantize if quantize is None else quantize) else x


class BackendReward:
    def __init__(self, run):
        self.run = run

    def probability(self, frames, task):
        return self.run(frames, task)[0]


def make_env(backend: Backend, models, args, threads: int, cache: Path):
    from world4rl_model.env import WorldModelEnv

    wm, rm = copy.deepcopy(models[0]), copy.deepcopy(models[1])
    eager = backend.kind == "torch"
    env = WorldModelEnv(
        wm,
        rm,
        models[3],
        num_envs=args.batch,
        horizon=10**9,
        start="any",
        episodes=list(range(min(args.episodes, len(models[3])))),
        sampling_steps=args.denoise_steps,
        terminate_on_success=False,
        channels_last=eager and backend.channels_last,
        bf16=eager and backend.bf16,
        seed=0,
    )
    if not eager:
        env.reset(seed=0)
        example = real_inputs(wm, env, args.batch, 1)
        mods = export_modules(wm, rm, None)
        denoise = make_runner(backend, "denoiser", mods["denoiser"], example["denoiser"][0], threads, cache)
        env.world_model = BackendSampler(wm, denoise)
        env.reward_model = BackendReward(
            make_runner(backend, "reward", mods["reward"], example["reward"][0], threads, cache)
        )
    env.reset(seed=0)
    return env


def env_outputs(env, actions):
    env.reset(seed=0)
    obs, _, _, _, info = env.step(actions)
    return obs["image"].clone(), info["success_prob"].float().clone()


def env_table(backends, models, threads: int, cache: Path, args, log=print) -> list[dict]:
    import torch

    envs = {b.name: make_env(b, models, args, threads, cache) for b in backends}
    actions = torch.rand(args.batch, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    outs = {k: env_outputs(env, actions) for k, env in envs.items()}  # also the warm-up
    ref_img, ref_p = outs["torch fp32"]
    times = interleaved({k: (lambda e=e: e.step(actions)) for k, e in envs.items()}, args.rounds, args.steps, log)
    base = summary(times["torch fp32"])
    rows = []
    for k, (img, p) in outs.items():
        s = summary(times[k])
        rows.append(
            {
                "backend": k,
                "transitions_per_s_best": round(args.batch / s["best_ms"] * 1e3, 1),
                "transitions_per_s_median": round(args.batch / s["median_ms"] * 1e3, 1),
                "spread": round(s["spread"], 2),
                "vs_torch_fp32_best": round(base["best_ms"] / s["best_ms"], 2),
                "vs_torch_fp32_median": round(base["median_ms"] / s["median_ms"], 2),
                "frame_max_diff_grey": int((img.int() - ref_img.int()).abs().max()),
                "frame_pixels_differing": round(float((img != ref_img).float().mean()), 4),
                "success_prob_max_diff": float(f"{float((p - ref_p).abs().max()):.3g}"),
            }
        )
    return rows


# ---- table 3: child processes (tcmalloc or not) ----------------------------------------------------
def model_args(args) -> list[str]:
    out = []
    for flag in ("world_model", "reward", "policy", "dataset"):
        if getattr(args, flag):
            out += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return out


def worker(args) -> int:
    """Child process: the env step of one backend; prints one JSON line of per-round seconds per step."""
    import torch

    torch.set_num_threads(args.threads)
    models = load_models(args)
    env = make_env(BY_NAME[args.worker], models, args, args.threads, Path(tempfile.mkdtemp(prefix="bench_backends_")))
    actions = torch.rand(args.batch, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    env.step(actions)
    times = interleaved({"env": lambda: env.step(actions)}, args.rounds, args.steps)["env"]
    print(json.dumps({"seconds_per_step": times}))
    return 0


def child(args, backend: str, tcmalloc: bool) -> list[float]:
    from world4rl_model.runtime import tcmalloc_env

    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    env.pop("LD_PRELOAD", None)
    env.pop("WORLD4RL_NO_TCMALLOC", None)
    env = tcmalloc_env(env) if tcmalloc else {**env, "WORLD4RL_NO_TCMALLOC": "1"}
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        backend,
        "--rounds",
        str(args.rounds),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--batch",
        str(args.batch),
        "--denoise-steps",
        str(args.denoise_steps),
        "--episodes",
        str(args.episodes),
        *model_args(args),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds_per_step"]


def process_table(args, log=print) -> list[dict]:
    variants = [v for v in PROCESS_VARIANTS if BY_NAME[v[1]] in available(BACKENDS)]
    times: dict[str, list[float]] = {v[0]: [] for v in variants}
    for r in range(args.process_rounds):
        for label, backend, tcmalloc in variants:
            times[label] += child(args, backend, tcmalloc)
            log(f"process round {r}: {label}: {args.batch / min(times[label][-args.rounds :]):.1f} transitions/s")
    base = summary(times[variants[0][0]])
    rows = []
    for label, _, _ in variants:
        s = summary(times[label])
        rows.append(
            {
                "process": label,
                "transitions_per_s_best": round(args.batch / s["best_ms"] * 1e3, 1),
                "transitions_per_s_median": round(args.batch / s["median_ms"] * 1e3, 1),
                "spread": round(s["spread"], 2),
                "vs_first_best": round(base["best_ms"] / s["best_ms"], 2),
                "vs_first_median": round(base["median_ms"] / s["median_ms"], 2),
            }
        )
    return rows


# ---- main ------------------------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 round, 1 timed step, 1 process round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best and median reported)")
    p.add_argument("--steps", type=int, default=2, help="timed env steps per backend per round")
    p.add_argument("--call-seconds", type=float, default=0.3, help="timed calls per round last about this long")
    p.add_argument("--process-rounds", type=int, default=2, help="child processes per variant in table 3")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--denoise-steps", type=int, default=2, help="Euler steps per imagined step")
    p.add_argument("--episodes", type=int, default=16, help="start episodes of the dataset (the first N)")
    p.add_argument("--threads", type=int, default=0, help="threads of every backend (0: the cores of this process)")
    p.add_argument("--world-model", help="world-model checkpoint (or run); with --reward, --policy, --dataset")
    p.add_argument("--reward", help="reward-classifier checkpoint (or run)")
    p.add_argument("--policy", help="policy checkpoint (or run)")
    p.add_argument("--dataset", help="dataset whose frames are the inputs")
    p.add_argument("--no-process-table", action="store_true", help="skip table 3 (child processes)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.process_rounds, args.call_seconds = 1, 1, 1, 0.05
    args.threads = args.threads or len(os.sched_getaffinity(0))
    if args.world_model and not (args.reward and args.policy and args.dataset):
        p.error("--world-model needs --reward, --policy and --dataset")
    return args


def reexec_without_tcmalloc() -> None:
    """OpenVINO aborts under a preloaded tcmalloc: run this process with glibc malloc."""
    from world4rl_model.runtime import tcmalloc_active

    if tcmalloc_active():
        env = {**os.environ, "WORLD4RL_NO_TCMALLOC": "1"}
        env["LD_PRELOAD"] = ":".join(p for p in env["LD_PRELOAD"].split(":") if "tcmalloc" not in p)
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def markdown(result) -> str:
    lines = [
        "# CPU inference backends",
        "",
        result["what"],
        "",
        "Per call (best and median of the interleaved rounds; ratio: torch fp32's time / this one's):",
        "",
        "| network | batch | backend | best ms | median ms | vs torch fp32 best | median | max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['network']} | {r['batch']} | {r['backend']} | {r['best_ms']:.2f} | {r['median_ms']:.2f} | "
        f"{r['vs_torch_fp32_best']}x | {r['vs_torch_fp32_median']}x | {r['max_abs_diff']:.2g} |"
        for r in result["per_call"]
    ]
    lines += [
        "",
        "WorldModelEnv.step, in this process (frames: largest difference in grey levels and share of "
        "pixels that differ from torch fp32's, same seed):",
        "",
        "| backend | transitions/s best | median | max/min | vs torch fp32 best | median | frame diff | "
        "pixels differing | P(success) diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['backend']} | {r['transitions_per_s_best']} | {r['transitions_per_s_median']} | {r['spread']} | "
        f"{r['vs_torch_fp32_best']}x | {r['vs_torch_fp32_median']}x | {r['frame_max_diff_grey']} | "
        f"{r['frame_pixels_differing']:.2%} | {r['success_prob_max_diff']:.2g} |"
        for r in result["env_step"]
    ]
    if result["processes"]:
        lines += [
            "",
            "WorldModelEnv.step in child processes, alternating (ratio against the first row):",
            "",
            "| process | transitions/s best | median | max/min | vs first best | median |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['process']} | {r['transitions_per_s_best']} | {r['transitions_per_s_median']} | "
            f"{r['spread']} | {r['vs_first_best']}x | {r['vs_first_median']}x |"
            for r in result["processes"]
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from world4rl_model.runtime import configure_openmp

    configure_openmp()
    if args.worker:
        return worker(args)
    reexec_without_tcmalloc()
    import torch

    torch.set_num_threads(args.threads)
    t_start = time.time()
    models = load_models(args)
    backends = available(BACKENDS)
    cache = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    probe = make_env(BACKENDS[0], models, args, args.threads, cache)
    inputs = real_inputs(models[0], probe, args.batch, args.denoise_steps)
    modules = export_modules(*models[:3])
    per_call = per_call_table(backends, modules, inputs, args.threads, cache, args)
    env_rows = env_table(backends, models, args.threads, cache, args)
    processes = [] if args.no_process_table else process_table(args)
    versions = {m: __import__(m).__version__ for m in ("torch", "onnxruntime", "openvino") if _has(m)}
    load = [round(x, 2) for x in os.getloadavg()]
    what = (
        f"{args.threads} threads for every backend, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY')}, glibc "
        f"malloc in this process; WorldModelEnv: {args.batch} envs, {args.denoise_steps} Euler steps + classifier; "
        f"models: {'checkpoints ' + args.world_model if args.world_model else 'random weights, square world'}; "
        f"{args.rounds} interleaved rounds; load average at the end {load} on "
        f"{len(os.sched_getaffinity(0))} cores; {versions}; {time.time() - t_start:.0f} s."
    )
    result = {
        "benchmark": "inference_backends",
        "what": what,
        "threads": args.threads,
        "load_average_at_end": load,
        "versions": versions,
        "per_call": per_call,
        "env_step": env_rows,
        "processes": processes,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference_backends.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "inference_backends.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
