"""Simulation-based calibration of the acceptance model build_model returns, at a size CI cannot afford.

Fits ``--simulations`` prior predictive draws of the SBC design (two drafter types, fine-tuned
drafters on and off their own tasks, contexts past some training windows; every term of the model)
and prints each checked parameter's rank histogram and the chi-square p-value of its uniformity.
Run: ``python benchmarks/bench_sbc.py [--simulations 200] [--seed 0] [--part acceptance|drafting]``
(about 13 minutes at 200 here; ``--part drafting`` calibrates the chance-of-drafting part).
"""

from __future__ import annotations

import argparse
import json
import time

from specsim.model.calibration import drafting_calibration, simulation_based_calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--part", choices=("acceptance", "drafting"), default="acceptance",
                        help="the acceptance model, or the chance-of-drafting part")
    args = parser.parse_args()
    started = time.perf_counter()
    calibrate = simulation_based_calibration if args.part == "acceptance" else drafting_calibration
    result = calibrate(args.simulations, seed=args.seed, bins=args.bins)
    print(json.dumps({"part": args.part, "simulations": args.simulations, "seed": args.seed,
                      "seconds": time.perf_counter() - started,
                      "p_values": result.p_values, "histograms": result.histogram(args.bins).to_dict("list")},
                     indent=1))


if __name__ == "__main__":
    main()
