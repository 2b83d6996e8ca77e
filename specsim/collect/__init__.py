"""Collection of traces: models, prompt sets, the draft-verify loop and the runner.

Importing this package does not import torch; the submodules ``decoding`` and ``models``
and :func:`specsim.collect.runner.collect` do.
"""

from specsim.collect.prompts import Prompt, read_prompts, write_prompts
from specsim.collect.runner import CollectConfig, DrafterSpec, collect, parse_drafter

__all__ = ["Prompt", "read_prompts", "write_prompts", "CollectConfig", "DrafterSpec", "collect", "parse_drafter"]
