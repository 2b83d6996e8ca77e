"""Compile time of a model's log density, with specsim's cacheable digamma and with PyTensor's own.

nutpie compiles each model's log density and gradient with Numba. With PyTensor 2, the digamma of
the beta-binomial gradient holds a raw pointer to SciPy's function, so Numba caches neither it nor
any graph that holds it; :func:`specsim.model.backend.configure_pytensor` registers one that looks the
pointer up at run time. Run each variant as its own process, in turn, after a first run has filled
Numba's cache (the second and later fits on a machine):

    python benchmarks/bench_compile.py --model 10M
    python benchmarks/bench_compile.py --model 10M --pytensor-digamma

``--model``: ``10M`` (the acceptance model of ``bench_fit.py``'s 10M synthetic tokens), ``drafting``
(the chance-of-drafting model of the recovery test's design). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("10M", "drafting"), default="10M")
    parser.add_argument("--pytensor-digamma", action="store_true",
                        help="keep PyTensor's own digamma (uncached), for comparison")
    args = parser.parse_args()
    from specsim.model import backend

    if args.pytensor_digamma:
        backend._register_cacheable_digamma = lambda: None
    import nutpie

    from specsim.model import ModelOptions
    from specsim.model.drafting import build_drafting_model
    from specsim.model.hierarchical import build_model
    from specsim.model.synthetic_counts import TRUE_DRAFTING, synthetic_counts

    if args.model == "10M":
        counts, _ = synthetic_counts(rng=1, evaluated_per_cell=10_000_000 // 300)
        model = build_model(counts, ModelOptions(parameterisation="auto"))
    else:
        counts, _ = synthetic_counts(rng=3, evaluated_per_cell=600, drafting=TRUE_DRAFTING)
        model = build_drafting_model(counts.drafting, 3)
    start = time.perf_counter()
    nutpie.compile_pymc_model(model)
    print(json.dumps({"model": args.model, "digamma": "pytensor" if args.pytensor_digamma else "specsim",
                      "compile_s": round(time.perf_counter() - start, 2)}))


if __name__ == "__main__":
    main()
