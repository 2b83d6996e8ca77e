"""Collector speed: the project's draft-verify loop vs Hugging Face assisted generation.

Same target, drafter, prompts and gamma, greedy. Hugging Face reads the draft length from the
*assistant's* generation config; it is set to a constant ``gamma`` with the confidence threshold
off (0, not None, which means the 0.4 default), so both run the same algorithm. Also times the
loop with recording off (the recording overhead) and plain decoding (measured speed-up). Runs are
interleaved per prompt (A, B, C, D, E per round) so machine drift hits all alike; medians and
ratios of per-prompt times are printed as JSON.

With ``--drafter prompt-lookup[:N]`` the comparison is prompt lookup: the collector's
:class:`~specsim.collect.drafters.PromptLookupDrafter` against ``generate(prompt_lookup_num_tokens=gamma,
max_matching_ngram_size=N)``.

Run: ``python benchmarks/bench_collector.py [--drafter SPEC] [--task T] [--prompts N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from specsim.collect.decoding import (
    CachedLM,
    ConstantGamma,
    ModelDrafter,
    Warp,
    autoregressive_decode,
    speculative_decode,
)
from specsim.collect.drafters import PromptLookupDrafter
from specsim.collect.models import load_model
from specsim.collect.prompts import encode_prompt, read_prompts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drafter", default="smollm2#layers=4")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--task", default="code", help="held-out prompts of data/prompts/TASK.jsonl")
    args = parser.parse_args()

    target = load_model("smollm2")
    prompts = [p for p in read_prompts(ROOT / "data" / "prompts" / f"{args.task}.jsonl")
               if p.extra["split"] == "heldout"]
    encoded = [encode_prompt(target.tokenizer, p) for p in prompts[: args.prompts]]
    eos = {target.tokenizer.eos_token_id}
    lm = CachedLM(target.model)
    lookup = args.drafter.startswith("prompt-lookup")
    hf_options: dict = {}
    if lookup:
        max_ngram = int(args.drafter.partition(":")[2] or 2)
        draft = PromptLookupDrafter(max_ngram, eos)
        hf_options = {"prompt_lookup_num_tokens": args.gamma, "max_matching_ngram_size": max_ngram}
    else:
        drafter = load_model(args.drafter)
        draft = ModelDrafter(drafter.model)
        assistant = drafter.model
        assistant.generation_config.num_assistant_tokens = args.gamma
        assistant.generation_config.num_assistant_tokens_schedule = "constant"
        assistant.generation_config.assistant_confidence_threshold = 0.0
        hf_options = {"assistant_model": assistant}

    def ours(ids, record=True):
        return speculative_decode(lm, draft, ids, schedule=ConstantGamma(args.gamma), warp=Warp(),
                                  max_new_tokens=args.max_new_tokens, eos_ids=eos, record=record)

    def hf(ids, assisted=True):
        start = time.perf_counter()
        with torch.inference_mode():
            out = target.model.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens, do_sample=False,
                                        **(hf_options if assisted else {}),
                                        eos_token_id=list(eos), pad_token_id=target.tokenizer.eos_token_id)
        return time.perf_counter() - start, out[0, len(ids):].tolist()

    ours(encoded[0][:16])
    hf(encoded[0][:16])
    times = {name: [] for name in ("ours_recording", "ours_no_recording", "hf_assisted", "ours_plain", "hf_plain")}
    same_output = []
    for _ in range(args.rounds):
        for ids in encoded:
            recorded = ours(ids)
            times["ours_recording"].append(recorded.wall_s)
            times["ours_no_recording"].append(ours(ids, record=False).wall_s)
            seconds, hf_ids = hf(ids)
            times["hf_assisted"].append(seconds)
            times["ours_plain"].append(autoregressive_decode(lm, ids, warp=Warp(), max_new_tokens=args.max_new_tokens,
                                                             eos_ids=eos).wall_s)
            times["hf_plain"].append(hf(ids, assisted=False)[0])
            same_output.append(hf_ids == recorded.output_ids)
    arrays = {k: np.array(v) for k, v in times.items()}
    print(json.dumps({
        "drafter": args.drafter, "task": args.task, "gamma": args.gamma, "prompts": len(encoded), "rounds": args.rounds,
        "median_s": {k: float(np.median(v)) for k, v in arrays.items()},
        "collector_over_hf_assisted": float(np.median(arrays["ours_recording"] / arrays["hf_assisted"])),
        "recording_overhead": float(np.median(arrays["ours_recording"] / arrays["ours_no_recording"]) - 1),
        "speedup_vs_plain_ours": float(np.median(arrays["ours_plain"] / arrays["ours_recording"])),
        "speedup_vs_plain_hf": float(np.median(arrays["hf_plain"] / arrays["hf_assisted"])),
        "same_tokens_as_hf_assisted": float(np.mean(same_output)),
    }, indent=2))


if __name__ == "__main__":
    main()
