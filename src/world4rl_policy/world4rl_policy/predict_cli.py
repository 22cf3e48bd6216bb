"""`world4rl predict`: predicted real success of a refine run's BC and refined policies, and the gate.

`world4rl refine` does this as its closing step; this command does it again for a finished run (an
earlier run, other prediction settings, or after the gate record went stale). Everything else comes
from the refined checkpoint's own record: the BC policy it started from, the world model, the reward
classifier, the dataset, the task and the refinement's settings (threshold, sampling steps, bf16).
Writes REFINE_RUN/gate.json and prints it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from world4rl_model.config import meta
from world4rl_policy.prediction import PredictionSettings, shift_line

HELP = "predict a refine run's BC and refined real success from imagination; choose the policy to deploy"


@dataclass
class PredictConfig:
    """Settings of `world4rl predict` (`--help` lists them)."""

    refined: str = field(metadata=meta(positional=True, metavar="REFINE_RUN"))  # a `world4rl refine` run directory
    prediction: PredictionSettings = field(default_factory=PredictionSettings, metadata=meta(flat=True))
    device: str | None = None  # torch device (None: the refine run's)
    threads: int | None = None  # torch CPU threads (None: the cores)
    progress: bool = True  # show a progress bar over the dreams


def run(cfg: PredictConfig) -> dict:
    import torch

    from world4rl_model.runtime import describe_runtime, record_runtime, runtime_facts
    from world4rl_policy.policy import load_policy_module
    from world4rl_policy.ppo import PPOConfig, predict_after_refine

    _, config = load_policy_module(cfg.refined)
    recorded = config.get("ppo_config")
    if not recorded:
        raise ValueError(f"{cfg.refined}: not a `world4rl refine` run (its checkpoint records no ppo_config)")
    known = {f.name for f in dataclasses.fields(PPOConfig)}
    settings = {k: v for k, v in recorded.items() if k in known and k != "prediction"}
    settings.update(
        out=cfg.refined,
        prediction=cfg.prediction,
        progress=cfg.progress,
        device=cfg.device or recorded.get("device", "cpu"),
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ppo = PPOConfig(**settings)
    facts = runtime_facts(ppo.device, torch.get_num_threads(), ppo.bf16)
    record_runtime(cfg.refined, "predict", facts)
    print(f"[predict] runtime: {describe_runtime(facts)}", file=sys.stderr, flush=True)
    return predict_after_refine(ppo, ppo.task, int(config.get("update") or 0))


def main(argv: Sequence[str] | None = None, prog: str = "world4rl predict") -> int:
    from world4rl_model.checkpoint import CheckpointError
    from world4rl_model.config import cli
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()
    cfg = cli(PredictConfig, argv, prog=prog, description=f"{HELP}. {__doc__.split(chr(10), 2)[2].strip()}")
    if (cfg.device or "cpu").startswith("cpu"):
        maybe_reexec_with_tcmalloc("cpu")  # the same command line, with tcmalloc preloaded
    try:
        result = run(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    print(f"[predict] {result['deploy']['policy']}: {result['deploy']['reason']}", file=sys.stderr)
    if (prediction := result["prediction"]) is not None:
        print(f"[predict] {shift_line(prediction['policy_shift'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
