"""Loading of the native hook library and its import-time safety checks.

The hook reads ``struct ggml_tensor`` fields directly, so it may only run
with the llama.cpp build whose headers it was compiled against. Before the
library is used, this module checks the llama-cpp-python version, the
headers' sha256 and the tensor layout seen through the loaded libggml.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
from pathlib import Path

import llama_cpp  # noqa: F401  (loads libggml and libllama with RTLD_GLOBAL first)

__all__ = ["HookBuildError", "load_hook_library"]

_REINSTALL = "reinstall lrgate with `pip install --force-reinstall --no-deps .` from its source tree"

c_float_p = ctypes.POINTER(ctypes.c_float)
c_int32_p = ctypes.POINTER(ctypes.c_int32)
c_uint8_p = ctypes.POINTER(ctypes.c_uint8)

_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "lrg_state_new": (ctypes.c_void_p, [ctypes.c_int, ctypes.c_int]),
    "lrg_state_free": (None, [ctypes.c_void_p]),
    "lrg_clear_ops": (None, [ctypes.c_void_p]),
    "lrg_add_edit_op": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
         ctypes.c_float, c_float_p],
    ),
    "lrg_add_capture_op": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, c_float_p, c_int32_p,
         c_int32_p, ctypes.c_int],
    ),
    "lrg_add_gate_op": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_char_p, c_float_p, ctypes.c_int, c_float_p, c_float_p,
         c_float_p, ctypes.c_float, ctypes.c_float, c_float_p],
    ),
    "lrg_gate_set_options": (ctypes.c_int,
                             [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]),
    "lrg_capture_count": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "lrg_capture_dropped": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "lrg_capture_reset": (None, [ctypes.c_void_p, ctypes.c_int]),
    "lrg_gate_configure_seq": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_int, c_float_p, c_float_p, c_float_p, ctypes.c_float,
         ctypes.c_double, ctypes.c_int],
    ),
    "lrg_gate_reset_seq": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "lrg_gate_read_seq": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_double),
         ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
    ),
    "lrg_set_batch": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, c_int32_p, c_uint8_p]),
    "lrg_set_force_copy": (None, [ctypes.c_void_p, ctypes.c_bool]),
    "lrg_set_probe": (None, [ctypes.c_void_p, ctypes.c_bool]),
    "lrg_set_stop_after": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "lrg_stopped_count": (ctypes.c_int64, [ctypes.c_void_p]),
    "lrg_probe_count": (ctypes.c_int, [ctypes.c_void_p]),
    "lrg_probe_entry": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
         ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int64),
         ctypes.POINTER(ctypes.c_int64)],
    ),
    "lrg_asked_count": (ctypes.c_int64, [ctypes.c_void_p]),
    "lrg_observed_count": (ctypes.c_int64, [ctypes.c_void_p]),
    "lrg_error_count": (ctypes.c_int, [ctypes.c_void_p]),
    "lrg_state_error": (ctypes.c_char_p, [ctypes.c_void_p]),
    "lrg_clear_error": (None, [ctypes.c_void_p]),
    "lrg_build_info": (ctypes.c_char_p, [ctypes.c_int]),
    "lrg_check_tensor_layout": (ctypes.c_int, []),
    "lrg_project_rows": (
        None,
        [c_float_p, ctypes.c_int64, ctypes.c_int64, c_float_p, ctypes.c_int, c_float_p],
    ),
    "lrg_readout_rows": (
        None,
        [c_float_p, ctypes.c_int64, ctypes.c_int64, c_float_p, ctypes.c_int, c_float_p,
         c_float_p, c_float_p, ctypes.c_float, c_float_p],
    ),
    "lrg_add_rows": (None, [c_float_p, ctypes.c_int64, ctypes.c_int64, c_float_p, ctypes.c_float]),
    "lrg_ablate_rows": (None, [c_float_p, ctypes.c_int64, ctypes.c_int64, c_float_p]),
}


class HookBuildError(RuntimeError):
    """The native hook is missing or was built for another llama.cpp."""


def _library_path() -> Path:
    here = Path(__file__).resolve().parent
    names = ("liblrgate_hook.so", "liblrgate_hook.dylib", "lrgate_hook.dll")
    candidates = [here / name for name in names]
    # An editable install keeps the compiled library in site-packages.
    spec_dirs = [Path(p) for p in __import__("lrgate_cpp").__path__]
    candidates += [d / name for d in spec_dirs for name in names]
    for path in candidates:
        if path.exists():
            return path
    raise HookBuildError(f"the native hook library was not found next to {here}; {_REINSTALL}")


def _installed_header_sha256(name: str) -> str | None:
    """Return the sha256 of a header installed by llama-cpp-python, or None."""
    dist = importlib.metadata.distribution("llama-cpp-python")
    for file in dist.files or []:
        if file.name == name and file.parent.name == "include":
            path = Path(str(file.locate()))
            if path.exists():
                return hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def _check_build(lib: ctypes.CDLL) -> None:
    built_version = lib.lrg_build_info(0).decode()
    installed_version = importlib.metadata.version("llama-cpp-python")
    if built_version != installed_version:
        raise HookBuildError(
            f"the lrgate hook was built against llama-cpp-python {built_version} but "
            f"{installed_version} is installed; {_REINSTALL}"
        )
    for field, header in ((1, "ggml.h"), (2, "ggml-backend.h")):
        installed = _installed_header_sha256(header)
        built = lib.lrg_build_info(field).decode().lower()
        if installed is not None and installed != built:
            raise HookBuildError(
                f"{header} of the installed llama-cpp-python differs from the one the lrgate "
                f"hook was built against; {_REINSTALL}"
            )
    if lib.lrg_check_tensor_layout() != 0:
        raise HookBuildError(
            f"struct ggml_tensor in the loaded libggml differs from the hook's build; {_REINSTALL}"
        )


_LIBRARY: ctypes.CDLL | None = None


def load_hook_library() -> ctypes.CDLL:
    """Load, type and check the native hook library once per process."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    lib = ctypes.CDLL(str(_library_path()))
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    _check_build(lib)
    _LIBRARY = lib
    return lib
