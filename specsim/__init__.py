"""specsim: measure and predict the speed-up of speculative decoding.

``import specsim`` loads no torch; the collector imports it when it runs.
"""

import warnings

from specsim.errors import InputError

# ArviZ 0.2x announces its coming refactor on every import (a FutureWarning with its source line);
# specsim pins the ArviZ API it uses, so the announcement says nothing to its users.
warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
