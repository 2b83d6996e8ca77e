"""Where prompt lookup's accepted tokens come from, per context regime: the prompt or the model's own output.

A length effect of a lookup drafter can be a repetition effect: the target's outputs repeat
themselves more in the longer regimes, and lookup copies from the output as readily as from the
prompt. Prompt lookup is deterministic, so each collected step is replayed on its own context
(:func:`specsim.collect.drafters.lookup_copy_sources`) to find whether its draft was copied from the
prompt or from the output generated so far; the step's drafted and accepted tokens are then
counted by source, per regime. Also prints the share of output 4-grams that repeat an earlier
4-gram of the same output (the repetition the target itself shows).

Run: ``python scripts/lengths/lookup_sources.py [--traces data/traces/lengths] [--drafter prompt-lookup]``
(prints JSON; ``--out FILE`` writes it too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from specsim.analysis.length_effects import regime_of, regime_order
from specsim.collect.drafters import lookup_copy_sources
from specsim.collect.models import load_model
from specsim.collect.prompts import encode_prompt, read_prompts
from specsim.traces import read_traces
from specsim.traces.counts import step_positions
from specsim.traces.schema import SEQUENCE_KEY

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "data" / "prompts" / "lengths"


def repeated_ngram_share(tokens: list[int], n: int = 4) -> float:
    """Share of a sequence's n-grams that repeat an earlier n-gram of the same sequence."""
    seen, repeated, total = set(), 0, 0
    for start in range(len(tokens) - n + 1):
        gram = tuple(tokens[start:start + n])
        repeated += gram in seen
        total += 1
        seen.add(gram)
    return repeated / total if total else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(ROOT / "data" / "traces" / "lengths"))
    parser.add_argument("--drafter", default="prompt-lookup")
    parser.add_argument("--max-ngram", type=int, default=2)
    parser.add_argument("--gamma", type=int, default=4, help="the draft length whose steps are replayed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    traces = read_traces(args.traces)
    tokenizer = load_model("smollm2").tokenizer
    prompts = {p.prompt_id: p for path in sorted(PROMPTS.glob("heldout-*.jsonl")) for p in read_prompts(path)}
    greedy = ((traces.steps["temperature"] == 0) & (traces.steps["drafter"] == args.drafter)
              & (traces.steps["gamma"] == args.gamma))
    steps = traces.steps[greedy].reset_index(drop=True)
    steps["position"] = step_positions(steps)
    sequences = traces.sequences.set_index(SEQUENCE_KEY)
    rows, repetition = [], []
    for key, group in steps.groupby(SEQUENCE_KEY, observed=True):
        group = group.sort_values("step")
        prompt_id = key[1]
        output = list(sequences.loc[key, "output_token_ids"])
        prompt_ids = encode_prompt(tokenizer, prompts[prompt_id])
        sources = lookup_copy_sources(prompt_ids, output, group["position"].tolist(), args.max_ngram)
        rows.append(group.assign(source=sources, regime=regime_of(pd.Series([prompt_id] * len(group))).to_numpy()))
        repetition.append({"regime": regime_of(pd.Series([prompt_id])).iloc[0],
                           "repeated_4gram_share": repeated_ngram_share(output)})
    table = pd.concat(rows, ignore_index=True)
    drafted = table[table["n_drafted"] > 0]
    by_regime = []
    for regime in regime_order(table["regime"].unique()):
        part = drafted[drafted["regime"] == regime]
        total_drafted, total_accepted = int(part["n_drafted"].sum()), int(part["n_accepted"].sum())
        entry = {"regime": regime, "steps": int((table["regime"] == regime).sum()), "drafting_steps": len(part),
                 "drafted": total_drafted, "accepted": total_accepted,
                 "repeated_4gram_share": float(np.mean([r["repeated_4gram_share"] for r in repetition
                                                        if r["regime"] == regime]))}
        for source in ("prompt", "output"):
            rows_of = part[part["source"] == source]
            entry[f"accepted_from_{source}"] = int(rows_of["n_accepted"].sum())
            entry[f"share_of_accepted_from_{source}"] = (float(rows_of["n_accepted"].sum()) / total_accepted
                                                         if total_accepted else float("nan"))
            entry[f"acceptance_rate_from_{source}"] = (float(rows_of["n_accepted"].sum() / rows_of["n_drafted"].sum())
                                                       if len(rows_of) else float("nan"))
        by_regime.append(entry)
    text = json.dumps({"drafter": args.drafter, "by_regime": by_regime}, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
