"""Simulator throughput: Monte Carlo tokens per second, exact grid time, vs a per-token Python loop.

Run: ``python benchmarks/bench_simulate.py`` (prints JSON). All figures come from one run on one
core (NumPy's element-wise kernels are single-threaded); compare ratios, not absolute times.
"""

from __future__ import annotations

import json
import time

import numpy as np

from specsim.simulate import AcceptanceProfile, CostModel
from specsim.simulate.exact import expected_grid
from specsim.simulate.montecarlo import simulate_workload

PROFILE = AcceptanceProfile(np.array([[0.8, 0.7, 0.6], [0.7, 0.6, 0.5], [0.65, 0.55, 0.45], [0.6, 0.5, 0.4]]),
                            np.array([64, 512]))
COST = CostModel(draft_base_s=0.006, draft_per_context_s=1e-6, verify_base_s=0.03, verify_per_token_s=0.004,
                 verify_per_context_s=1e-5, target_base_s=0.031, target_per_context_s=1e-5)


def python_loop(prompt, output, gamma, rng) -> float:
    """Reference: one sequence at a time, one drafted token at a time, in plain Python."""
    total = 0.0
    base, per_context = COST.step_coefficients(gamma)
    for p, length in zip(prompt.tolist(), output.tolist(), strict=True):
        position = 0
        while position < length:
            rates = PROFILE.rates_at(np.array([position]), gamma)[0]
            accepted = 0
            for rate in rates:
                if rng.random() < rate:
                    accepted += 1
                else:
                    break
            total += base + per_context * (p + position)
            position += accepted + 1
    return total


def main() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    prompt, output = rng.integers(10, 2000, n), rng.integers(16, 512, n)
    simulate_workload(PROFILE, COST, 4, prompt[:1000], output[:1000], rng=1)  # warm-up
    start = time.perf_counter()
    simulate_workload(PROFILE, COST, 4, prompt, output, rng=1)
    mc_seconds = time.perf_counter() - start
    mc_rate = output.sum() / mc_seconds

    small = 300
    start = time.perf_counter()
    python_loop(prompt[:small], output[:small], 4, np.random.default_rng(2))
    loop_seconds = time.perf_counter() - start
    loop_rate = output[:small].sum() / loop_seconds

    grid_prompt, grid_output = rng.integers(10, 4000, 10_000), rng.integers(1, 10_000, 10_000)
    start = time.perf_counter()
    expected_grid(PROFILE, COST, np.arange(1, 9), grid_prompt, grid_output)
    grid_seconds = time.perf_counter() - start
    print(json.dumps({
        "monte_carlo_tokens_per_s": mc_rate, "monte_carlo_sequences": n,
        "python_loop_tokens_per_s": loop_rate, "monte_carlo_over_python_loop": mc_rate / loop_rate,
        "exact_grid_seconds_10k_lengths_x_8_gammas": grid_seconds, "exact_grid_max_length": int(grid_output.max()),
    }, indent=2))


if __name__ == "__main__":
    main()
