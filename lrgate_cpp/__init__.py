"""lrgate: a low-rank refusal gate for llama.cpp models."""

import logging
import os

# llama.cpp's CPU backend runs its threads through OpenMP (libgomp), whose
# idle threads spin by default. On a machine where other processes compete
# for the cores, spinning threads made a 2-thread SmolLM2 decode 20 times
# slower (1.3 against 25 tokens/s, measured on a loaded 2-core VM). Passive
# waiting costs little on an idle machine. This only takes effect when
# lrgate_cpp is imported before llama_cpp; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# A library stays quiet unless the application configures logging.
logging.getLogger("lrgate_cpp").addHandler(logging.NullHandler())
