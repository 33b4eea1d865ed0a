"""lrgate: a low-rank refusal gate for llama.cpp models."""

import logging
import os

# llama.cpp's CPU backend runs its threads through OpenMP (libgomp), whose
# idle threads spin for a long time by default. Measured with a 32-token
# SmolLM2 decode on 2 threads of a 2-core VM, tokens/s (spin default /
# OMP_WAIT_POLICY=PASSIVE / GOMP_SPINCOUNT=1000): idle 90 / 29 / 88; two
# such processes at once 0.5 / 40 / 31 each. A short spin keeps nearly all
# the idle speed and avoids the collapse under contention. This only takes
# effect when lrgate_cpp is imported before llama_cpp, and a policy or spin
# count the user set is kept.
#: True when this import set GOMP_SPINCOUNT (child processes inherit it).
OPENMP_SPIN_SET = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
if OPENMP_SPIN_SET:
    os.environ["GOMP_SPINCOUNT"] = "1000"

# A library stays quiet unless the application configures logging.
logging.getLogger("lrgate_cpp").addHandler(logging.NullHandler())
