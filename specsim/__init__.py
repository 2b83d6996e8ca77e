"""specsim: measure and predict the speed-up of speculative decoding.

``import specsim`` loads no torch; the collector imports it when it runs.
"""

from specsim.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
