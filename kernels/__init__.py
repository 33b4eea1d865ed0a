"""numba kernels for the gate's row math.

The native hook carries C kernels with the same arithmetic (float32 rows,
double accumulators); tests/test_kernels.py checks that both agree.
"""

from lrgate_cpp.kernels.readout import readout_logits
from lrgate_cpp.kernels.rows import ablate_rows, add_rows, project_rows

__all__ = ["ablate_rows", "add_rows", "project_rows", "readout_logits"]
