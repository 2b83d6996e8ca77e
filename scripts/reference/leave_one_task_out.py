"""Leave-one-task-out prediction on the reference traces (``specsim loto`` does the same).

For each task: fit the hierarchical model without it, then predict each drafter's speed-up on
that task (a new task effect drawn from the task population, the drafter's own effect, its
fitted cost model, the divergence of its training lengths to the task's lengths, the task's own
sequence lengths) and compare with the measured speed-up (ratio of totals). Prints JSON with
per-cell figures and the coverage of the 90% intervals. ``--probe-prompts N`` also predicts each
cell with a probe made of its first N prompts' traces and measures every prediction on the others.

Run: ``python scripts/reference/leave_one_task_out.py [--traces DIR] [--gamma 4] [--draws 1000]
[--probe-prompts N]``.
"""

from __future__ import annotations

import argparse
import json

from specsim import workflow
from specsim.traces import read_traces


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", default="data/traces/reference")
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--probe-prompts", type=int, default=0)
    args = parser.parse_args()
    result = workflow.leave_one_task_out(read_traces(args.traces), gamma=args.gamma, draws=args.draws,
                                         probe_prompts=args.probe_prompts)
    print(json.dumps(result.to_dict(), indent=1, default=float))


if __name__ == "__main__":
    main()
