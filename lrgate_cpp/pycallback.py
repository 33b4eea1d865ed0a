"""A plain ctypes eval callback written in Python, as a reference.

It reads nodes through ggml's public functions only (``ggml_get_name``,
``ggml_nrows``, ``ggml_backend_tensor_get``), so it does not depend on the
layout of ``struct ggml_tensor``. Tests compare the native hook's captures
with it, and benchmarks measure what running Python on every ask costs.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import llama_cpp
import numpy as np

__all__ = ["PythonCapture"]


def _load_ggml_base() -> ctypes.CDLL:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations
    lib_dir = Path(spec.submodule_search_locations[0]) / "lib"
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (lib_dir / name).exists():
            lib = ctypes.CDLL(str(lib_dir / name))
            break
    else:
        raise FileNotFoundError(f"libggml-base not found in {lib_dir}")
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nrows.restype = ctypes.c_int64
    lib.ggml_nrows.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                            ctypes.c_size_t]
    return lib


class PythonCapture:
    """A Python eval callback that copies whole nodes after each decode step.

    Args:
        nodes: node names to copy; an empty set only answers the asks.

    Attributes:
        callback: the ctypes callback to pass as ``Context(eval_callback=...)``.
        captured: node name -> list of float32 arrays of shape (n_rows, ne0),
            one per decode.
    """

    def __init__(self, nodes: set[str]) -> None:
        self._ggml = _load_ggml_base()
        self.nodes = {name.encode() for name in nodes}
        self.captured: dict[str, list[np.ndarray]] = {name: [] for name in nodes}
        self.asked = 0
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_eval)

    def _on_eval(self, tensor: int, ask: bool, user_data: int) -> bool:
        name = self._ggml.ggml_get_name(tensor)
        if ask:
            self.asked += 1
            return name in self.nodes
        n_rows = int(self._ggml.ggml_nrows(tensor))
        n_bytes = int(self._ggml.ggml_nbytes(tensor))
        data = np.empty(n_bytes // 4, dtype=np.float32)
        self._ggml.ggml_backend_tensor_get(tensor, data.ctypes.data, 0, n_bytes)
        self.captured[name.decode()].append(data.reshape(n_rows, -1))
        return True
