"""``python -m specsim.cli``."""

from specsim.cli import run

run()
