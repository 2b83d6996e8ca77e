"""A cheap probe of a new workload's content: the target's own outputs on a handful of prompts and one
teacher-forced pass of each drafter over them, no speculative decoding.

Under greedy decoding a drafted token is evaluated only when every earlier token of its step was
accepted, so its context is exactly the target's own output: whether the drafter's argmax equals
the target's next token in a teacher-forced pass is whether that token would be accepted. The
probe's per-position agreement is therefore greedy acceptance at the positions a step would reach,
measured in one forward pass per drafter and prompt. ``specsim predict --probe`` uses it to update
a new task's effect (:func:`specsim.model.predict.predict_speedup`).

The probe table (Parquet, :data:`PROBE_COLUMNS`) has one row per drafter x prompt x generated
position: ``agree`` (bool), ``position`` (generated-token index) and ``context_len``. A probe
from a lookup drafter's traces also has ``drafted`` (bool): one row per step, 0 where the step
drafted nothing (:func:`specsim.workflow.probe_from_traces`). It is also a
workload: its prompts' lengths and the target's output lengths (:func:`probe_lengths`), so
``specsim predict --workload probe.parquet --probe probe.parquet`` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from specsim.errors import InputError

__all__ = ["PROBE_COLUMNS", "is_probe_table", "probe_lengths", "probe_workload", "read_probe"]

PROBE_COLUMNS = ("task", "drafter", "prompt_id", "position", "context_len", "agree")


def probe_workload(
    target: str, drafters: Sequence[tuple[str, str]], prompts_source: str, *, task: str | None = None,
    limit: int = 10, max_new_tokens: int = 128, device: str = "cpu", dtype: str = "float32",
    trust_remote_code: bool = False, progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """Target greedy outputs on the first ``limit`` prompts and each drafter's teacher-forced agreement.

    Parameters
    ----------
    target : str
        Target model spec.
    drafters : sequence of (name, model spec)
    prompts_source : str
        Prompt file or ``hf:`` source (as ``specsim collect`` reads them).
    task : str, optional
        Task name written into the table (default: the prompts' own task).
    """
    import torch

    from specsim.collect.decoding import CachedLM, Warp, autoregressive_decode
    from specsim.collect.models import check_same_vocabulary, load_model
    from specsim.collect.prompts import encode_prompt, load_prompts
    from specsim.collect.runner import _eos_ids

    if limit < 1 or max_new_tokens < 1:
        raise InputError("need --limit >= 1 and --max-new-tokens >= 1", field="--limit")
    prompts = load_prompts(prompts_source)[:limit]
    target_model = load_model(target, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    loaded = []
    for name, spec in drafters:
        model = load_model(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        check_same_vocabulary(target_model, model, name)
        loaded.append((name, model.model))
    target_lm = CachedLM(target_model.model)
    eos_ids = _eos_ids(target_model)
    rows = []
    for number, prompt in enumerate(prompts):
        prompt_ids = encode_prompt(target_model.tokenizer, prompt)
        output = autoregressive_decode(target_lm, prompt_ids, warp=Warp(), max_new_tokens=max_new_tokens,
                                       eos_ids=eos_ids).output_ids
        sequence = torch.tensor([prompt_ids + list(output)], device=target_lm.device)
        for name, model in loaded:
            with torch.inference_mode():
                logits = model(input_ids=sequence).logits[0]
            # The prediction at index p - 1 + i is the drafter's guess of output token i.
            guesses = logits[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(output)].argmax(-1).tolist()
            for position, (guess, actual) in enumerate(zip(guesses, output, strict=True)):
                rows.append({"task": task or prompt.task, "drafter": name, "prompt_id": prompt.prompt_id,
                             "position": position, "context_len": len(prompt_ids) + position,
                             "agree": guess == actual})
        if progress is not None:
            progress(number + 1, len(prompts), prompt.prompt_id)
    return pd.DataFrame(rows, columns=list(PROBE_COLUMNS))


def is_probe_table(frame: pd.DataFrame) -> bool:
    """Whether a table has the probe's columns."""
    return all(column in frame.columns for column in PROBE_COLUMNS)


def probe_lengths(frame: pd.DataFrame) -> pd.DataFrame:
    """The probed prompts' lengths: ``prompt_len`` (context at the first generated token) and
    ``output_len`` (the target's greedy output), one row per prompt, from one drafter's rows
    (every drafter of a probe saw the same outputs).
    """
    first = frame[frame["drafter"] == frame["drafter"].iloc[0]]
    per_prompt = first.groupby("prompt_id", sort=True).agg(prompt_len=("context_len", "min"),
                                                            last=("position", "max"))
    lengths = per_prompt.assign(output_len=per_prompt["last"] + 1)[["prompt_len", "output_len"]]
    return lengths.reset_index(drop=True)


def read_probe(path: str | Path, drafter: str | None = None) -> pd.DataFrame:
    """Read a probe table (Parquet); optionally one drafter's rows. One clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such probe file", path=path, field="--probe")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise InputError(f"not a readable Parquet file ({str(error).splitlines()[0]})", path=path) from None
    missing = [c for c in PROBE_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError("missing column (not a specsim probe?)", path=path, field=missing[0])
    if frame.empty:
        raise InputError("no rows", path=path, field="position")
    for column in ("position", "context_len", "agree"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any() or not np.isfinite(values.to_numpy(float)).all():
            row = int(np.flatnonzero(values.isna().to_numpy() | ~np.isfinite(values.to_numpy(float)))[0])
            raise InputError(f"row {row + 1}: must be a finite number, got {frame[column].iloc[row]!r}", path=path,
                             field=column)
        frame[column] = values
    checks: tuple[tuple[str, pd.Series, str], ...] = (("position", frame["position"] < 0, "must be >= 0"),
              ("context_len", frame["context_len"] < 0, "must be >= 0"),
              ("agree", ~frame["agree"].isin((0, 1)), "must be 0 or 1 (the drafter's token equals the target's)"))
    if "drafted" in frame:
        drafted = pd.to_numeric(frame["drafted"], errors="coerce")
        checks += (("drafted", ~drafted.isin((0, 1)), "must be 0 or 1 (the step drafted anything)"),
                   ("agree", (drafted == 0) & (frame["agree"] == 1), "must be 0 on a step that drafted nothing"))
    for column, bad, problem in checks:
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"row {row + 1}: {problem}, got {frame[column].iloc[row]!r}", path=path, field=column)
    if drafter is not None:
        frame = frame[frame["drafter"] == drafter]
        if frame.empty:
            raise InputError(f"no rows for drafter {drafter!r}", path=path, field="--drafter")
    return frame
