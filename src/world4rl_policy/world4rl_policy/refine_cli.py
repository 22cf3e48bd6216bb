"""`world4rl refine`: PPO in imagination, from a BC checkpoint, inside a frozen world model.

The command line is generated from PPOConfig (world4rl_model.config.cli): one flag per setting,
with the help and default declared there; `--preset FILE.yaml` starts from a preset (the results
recipe: bench/profiles/refine_results.yaml). Also `python -m world4rl_policy.refine_cli` and
`ros2 run world4rl_policy refine`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

HELP = "refine a BC policy with PPO inside the frozen world model, rewarded by the success classifier"
DESCRIPTION = (
    f"{HELP}. Imagined episodes start from real frames of DATASET; the world model dreams the next "
    "frames, the classifier decides success (reward 1, episode ends), episodes are truncated at "
    "--horizon. Checkpoints (safetensors + config.json, loadable by the policy runner) go to "
    "OUT/step_*/ with a `latest` pointer, TensorBoard scalars to OUT/tb, a video of imagined episodes "
    "to OUT/imagined.mp4. Re-running with the same OUT resumes. Example: world4rl refine --policy "
    "runs/bc/best --world-model runs/wm --reward runs/reward --dataset data/ds --task push --out "
    "runs/refine --preset bench/profiles/refine_results.yaml"
)


def main(argv: Sequence[str] | None = None, prog: str = "world4rl refine") -> int:
    from world4rl_model.checkpoint import CheckpointError
    from world4rl_model.config import cli
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()  # before torch is imported: idle OpenMP threads must not spin on shared cores
    from world4rl_policy.ppo import PPOConfig, refine

    cfg = cli(PPOConfig, argv, prog=prog, description=DESCRIPTION)
    maybe_reexec_with_tcmalloc(cfg.device)  # the same command line, with tcmalloc preloaded
    try:
        summary = refine(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
