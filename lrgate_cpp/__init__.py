"""lrgate: a low-rank refusal gate for llama.cpp models."""

import logging

# A library stays quiet unless the application configures logging.
logging.getLogger("lrgate_cpp").addHandler(logging.NullHandler())
