"""`world4rl train bc`: behaviour cloning of the Gaussian image policy on a world4rl dataset.

The command line is generated from BCConfig (world4rl_model.config.cli): one flag per setting,
with the help and default declared there; `--preset FILE.yaml` starts from a preset. Also runs
alone: `python -m world4rl_policy.train_bc_cli --help` (and `ros2 run world4rl_policy train_bc`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

HELP = "behaviour cloning: fit the Gaussian image policy to a dataset's demonstrations"
DESCRIPTION = (
    f"{HELP}. Writes checkpoints (safetensors + config.json) to OUT/step_*/ with a `latest` pointer, "
    "the best validation checkpoint to OUT/best, and TensorBoard scalars to OUT/tb. Re-running with the "
    "same OUT resumes from OUT/latest."
)


def main(argv: Sequence[str] | None = None, prog: str = "world4rl train bc") -> int:
    from world4rl_model.config import cli
    from world4rl_model.runtime import configure_openmp, maybe_reexec_with_tcmalloc

    configure_openmp()  # before torch is imported: idle OpenMP threads must not spin on shared cores
    from world4rl_policy.bc import BCConfig, train_bc

    cfg = cli(BCConfig, argv, prog=prog, description=DESCRIPTION)
    maybe_reexec_with_tcmalloc("cpu")  # the same command line, with tcmalloc preloaded (BC trains on the CPU)
    try:
        summary = train_bc(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    summary.pop("history", None)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
