"""Operations on llama.cpp graph nodes, run by the native eval callback.

A :class:`Hook` belongs to one context. It owns the native state and every
array the callback reads or writes, so nothing it hands to C can be freed
while the context lives. Operations name graph nodes (``l_out-N`` is the
residual stream after block N; any node name in the model's graph works)
and select rows by kind (prompt, last prompt row, generated) and sequence.
"""

from __future__ import annotations

import ctypes
import enum
import re
from dataclasses import dataclass

import numpy as np

from lrgate_cpp.native import load_hook_library

__all__ = [
    "Capture",
    "GateDecision",
    "Hook",
    "HookConfigError",
    "HookRuntimeError",
    "NodeInfo",
    "Readout",
    "Route",
    "Rows",
]

MAX_SEQUENCES = 256  # LRG_MAX_SEQ in hook.h
GGML_TYPE_F32 = 0


class Rows(enum.IntFlag):
    """Row kinds of a node that an operation touches."""

    PROMPT = 1
    LAST_PROMPT = 2
    GENERATED = 4
    ALL = 7


class Route(enum.IntEnum):
    """The gate's decision for a sequence."""

    NONE = 0
    HARMLESS = 1  # ablate the direction on every row
    HARMFUL = 2  # add alpha * direction to the last prompt row and generated rows


class HookConfigError(ValueError):
    """An operation names a node, vector or basis that does not fit the model."""


class HookRuntimeError(RuntimeError):
    """The callback met a node it could not handle during a decode."""


@dataclass(frozen=True)
class NodeInfo:
    """A graph node as seen in the probe decode: name, ggml type id and shape."""

    name: str
    type: int
    ne0: int
    ne1: int


@dataclass(frozen=True)
class Readout:
    """A low-rank logistic readout: ``bias + weight . ((basis_t @ h - mean) / scale)``.

    Attributes:
        basis_t: float32 array of shape (rank, n_embd).
        mean: float32 array of shape (rank,).
        scale: float32 array of shape (rank,), positive.
        weight: float32 array of shape (rank,).
        bias: intercept.
    """

    basis_t: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float


@dataclass(frozen=True)
class GateDecision:
    """The gate's decision for one sequence's last prompt."""

    logit: float
    route: Route
    decided: bool

    @property
    def probability(self) -> float:
        return float(1.0 / (1.0 + np.exp(-self.logit)))


class Capture:
    """Host buffers that a capture operation fills during decodes.

    Attributes:
        node: the captured node.
        capacity: rows the buffer holds; more rows are counted as dropped.
    """

    def __init__(self, hook: Hook, op: int, node: str, capacity: int, n_embd: int) -> None:
        self._hook = hook
        self.op = op
        self.node = node
        self.capacity = capacity
        self.rows_buffer = np.zeros((capacity, n_embd), dtype=np.float32)
        self.seq_buffer = np.zeros(capacity, dtype=np.int32)
        self.flag_buffer = np.zeros(capacity, dtype=np.int32)

    @property
    def count(self) -> int:
        return int(self._hook._lib.lrg_capture_count(self._hook._state, self.op))

    @property
    def dropped(self) -> int:
        return int(self._hook._lib.lrg_capture_dropped(self._hook._state, self.op))

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return copies of the captured rows.

        Returns:
            rows of shape (count, n_embd) float32, sequence ids of shape
            (count,) int32, and row flags (:class:`Rows` bits) of shape (count,).

        Raises:
            HookRuntimeError: rows were dropped because the buffer was full.
        """
        if self.dropped:
            raise HookRuntimeError(
                f"capture of {self.node} dropped {self.dropped} rows; its capacity is "
                f"{self.capacity} rows: raise capacity or read and reset more often"
            )
        n = self.count
        return self.rows_buffer[:n].copy(), self.seq_buffer[:n].copy(), self.flag_buffer[:n].copy()

    def reset(self) -> None:
        self._hook._lib.lrg_capture_reset(self._hook._state, self.op)


def _float_pointer(array: np.ndarray) -> ctypes._Pointer:
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


class Hook:
    """The native operations of one context.

    Args:
        n_embd: model width; every vector and basis row must have it.
        n_layer: number of blocks, used to reject the last layer's nodes.
        max_rows: largest batch (tokens per decode) the context runs.
        nodes: the graph nodes found by the probe decode, by name.
    """

    def __init__(self, n_embd: int, n_layer: int, max_rows: int,
                 nodes: dict[str, NodeInfo] | None = None) -> None:
        self._lib = load_hook_library()
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.max_rows = max_rows
        self.nodes = nodes or {}
        self._state = self._lib.lrg_state_new(n_embd, max_rows)
        if not self._state:
            raise MemoryError(f"could not allocate the hook state for {max_rows} rows")
        self._keep: list[np.ndarray] = []  # arrays the C side points into
        self._seq_keep: dict[int, list[np.ndarray]] = {}
        self.captures: list[Capture] = []
        self.has_gate = False
        self.gate_node: str | None = None

    @property
    def state_pointer(self) -> int:
        return int(self._state)

    # Configuration -------------------------------------------------------

    def capture(self, node: str, rows: Rows = Rows.ALL, seq: int | None = None,
                capacity: int | None = None) -> Capture:
        """Copy the selected rows of ``node`` into host buffers on every decode.

        Args:
            node: graph node name, e.g. ``"l_out-15"``.
            rows: row kinds to copy; default all.
            seq: only this sequence; None for all.
            capacity: rows the buffer holds; default 4 * max_rows.
        """
        self._check_node(node)
        seq_id = self._check_seq(seq)
        capacity = capacity or 4 * self.max_rows
        capture = Capture(self, -1, node, capacity, self.n_embd)
        op = self._lib.lrg_add_capture_op(
            self._state, node.encode(), int(rows), seq_id, _float_pointer(capture.rows_buffer),
            capture.seq_buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            capture.flag_buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), capacity)
        capture.op = self._check_op(op)
        self.captures.append(capture)
        return capture

    def add(self, node: str, vector: np.ndarray, alpha: float, rows: Rows = Rows.ALL,
            seq: int | None = None) -> int:
        """Add ``alpha * vector`` to the selected rows of ``node``; return the op index."""
        self._check_node(node)
        vec = self._check_vector(vector, "vector", unit=False)
        op = self._lib.lrg_add_edit_op(self._state, node.encode(), 1, int(rows),
                                       self._check_seq(seq), float(alpha), _float_pointer(vec))
        return self._check_op(op)

    def ablate(self, node: str, direction: np.ndarray, rows: Rows = Rows.ALL,
               seq: int | None = None) -> int:
        """Remove the component along a unit ``direction`` from the selected rows."""
        self._check_node(node)
        vec = self._check_vector(direction, "direction", unit=True)
        op = self._lib.lrg_add_edit_op(self._state, node.encode(), 2, int(rows),
                                       self._check_seq(seq), 0.0, _float_pointer(vec))
        return self._check_op(op)

    def gate(self, node: str, readout: Readout, direction: np.ndarray, alpha: float) -> int:
        """Decide each sequence's route from its last prompt row, then apply it.

        The decision reads the row before any operation edits it. A harmful
        route adds ``alpha * direction`` to the last prompt row and every
        generated row of the sequence; a harmless route ablates
        ``direction`` on every row of the sequence.
        """
        self._check_node(node)
        vec = self._check_vector(direction, "direction", unit=True)
        basis_t, mean, scale, weight = self._check_readout(readout)
        self._keep.extend((basis_t, mean, scale, weight))
        op = self._lib.lrg_add_gate_op(
            self._state, node.encode(), _float_pointer(basis_t), basis_t.shape[0],
            _float_pointer(mean), _float_pointer(scale), _float_pointer(weight),
            float(readout.bias), float(alpha), _float_pointer(vec))
        self.has_gate = True
        self.gate_node = node
        return self._check_op(op)

    def set_gate_options(self, cosine: bool = False, ablate_harmless: bool = True,
                         adaptive: bool = False) -> None:
        """Change how the gate reads and routes.

        Args:
            cosine: divide the projections by the row's norm, so the readout
                scores cosine similarities (conditional activation steering).
            ablate_harmless: apply the harmless route's ablation; False
                leaves harmless sequences unedited.
            adaptive: scale the harmful route's alpha by the logit clamped
                to [0, 1], an input-dependent steering coefficient.
        """
        if self._lib.lrg_gate_set_options(self._state, int(cosine), int(ablate_harmless),
                                          int(adaptive)) != 0:
            self._lib.lrg_clear_error(self._state)
            raise HookConfigError("set_gate_options needs a gate operation; call gate() first")

    def configure_sequence(self, seq: int, threshold: float = 0.0,
                           readout: Readout | None = None, force: Route | None = None) -> None:
        """Set a sequence's readout (its language's), threshold and forced route.

        Args:
            seq: sequence id.
            threshold: logit at or above which the route is harmful.
            readout: this sequence's readout; None keeps the gate's own. Its
                basis must be the gate's.
            force: a route applied whatever the logit; None lets the gate decide.
        """
        seq_id = self._check_seq(seq)
        pointers: list[ctypes._Pointer | None] = [None, None, None]
        bias = 0.0
        keep: list[np.ndarray] = []
        if readout is not None:
            _, mean, scale, weight = self._check_readout(readout)
            pointers = [_float_pointer(mean), _float_pointer(scale), _float_pointer(weight)]
            bias = float(readout.bias)
            keep = [mean, scale, weight]
        forced = -1 if force is None else int(force)
        if self._lib.lrg_gate_configure_seq(self._state, seq_id, *pointers, bias,
                                            float(threshold), forced) != 0:
            raise HookConfigError(f"could not configure sequence {seq}")
        self._seq_keep[seq_id] = keep

    def reset_sequence(self, seq: int) -> None:
        """Forget a sequence's decision, so its next prompt is decided afresh."""
        self._lib.lrg_gate_reset_seq(self._state, self._check_seq(seq))

    def decision(self, seq: int) -> GateDecision:
        logit = ctypes.c_double()
        route = ctypes.c_int()
        decided = ctypes.c_int()
        self._lib.lrg_gate_read_seq(self._state, self._check_seq(seq), ctypes.byref(logit),
                                    ctypes.byref(route), ctypes.byref(decided))
        return GateDecision(float(logit.value), Route(route.value), bool(decided.value))

    def clear(self) -> None:
        """Remove every operation; captures and gate state are dropped."""
        self._lib.lrg_clear_ops(self._state)
        self._keep.clear()
        self._seq_keep.clear()
        self.captures.clear()
        self.has_gate = False
        self.gate_node = None

    @property
    def force_copy(self) -> bool:
        return getattr(self, "_force_copy", False)

    @force_copy.setter
    def force_copy(self, on: bool) -> None:
        """Copy tensors through ggml_backend_tensor_get/set even in host memory."""
        self._force_copy = bool(on)
        self._lib.lrg_set_force_copy(self._state, self._force_copy)

    def stop_after(self, node: str | None) -> None:
        """End each forward pass once ``node`` is computed and its operations ran.

        Later layers, their KV cache entries and the logits stay unwritten,
        so only decodes that exist to read activations may use it, and
        their sequences must be cleared afterwards
        (:meth:`lrgate_cpp.runtime.Context.prefill_until` does both).
        None computes whole graphs again.
        """
        if node is not None:
            self._check_node(node)
        if self._lib.lrg_set_stop_after(self._state, None if node is None else node.encode()):
            self.raise_errors()

    @property
    def stopped_count(self) -> int:
        """Forward passes ended early by :meth:`stop_after` since the state was made."""
        return int(self._lib.lrg_stopped_count(self._state))

    # Decode-time plumbing, used by the runtime ----------------------------

    def set_batch(self, seq_ids: np.ndarray, flags: np.ndarray) -> None:
        """Describe the next batch: int32 sequence ids and uint8 row flags, shape (n_rows,)."""
        n = int(seq_ids.shape[0])
        if self._lib.lrg_set_batch(
                self._state, n, seq_ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                flags.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))) != 0:
            self.raise_errors()

    def raise_errors(self) -> None:
        """Raise the first error the callback recorded since the last call, if any."""
        if self._lib.lrg_error_count(self._state):
            message = self._lib.lrg_state_error(self._state).decode()
            self._lib.lrg_clear_error(self._state)
            raise HookRuntimeError(f"native hook: {message}")

    def probe(self, on: bool) -> None:
        self._lib.lrg_set_probe(self._state, on)

    def probed_nodes(self) -> dict[str, NodeInfo]:
        nodes: dict[str, NodeInfo] = {}
        name = ctypes.create_string_buffer(64)
        kind = ctypes.c_int()
        ne0 = ctypes.c_int64()
        ne1 = ctypes.c_int64()
        for i in range(self._lib.lrg_probe_count(self._state)):
            self._lib.lrg_probe_entry(self._state, i, name, 64, ctypes.byref(kind),
                                      ctypes.byref(ne0), ctypes.byref(ne1))
            key = name.value.decode()
            nodes.setdefault(key, NodeInfo(key, kind.value, ne0.value, ne1.value))
        return nodes

    def counters(self) -> tuple[int, int]:
        """Return (nodes asked about, nodes observed) since the state was made."""
        return (int(self._lib.lrg_asked_count(self._state)),
                int(self._lib.lrg_observed_count(self._state)))

    def free(self) -> None:
        """Free the native state; only after the context using it is freed."""
        if self._state:
            self._lib.lrg_state_free(self._state)
            self._state = None

    # Validation ------------------------------------------------------------

    def _check_node(self, node: str) -> None:
        if not isinstance(node, str) or not node:
            raise HookConfigError(f"node name must be a non-empty string; got {node!r}")
        match = re.fullmatch(r"(.+)-(\d+)", node)
        if match and int(match.group(2)) >= self.n_layer:
            raise HookConfigError(
                f"node {node} names layer {match.group(2)}, but the model has layers "
                f"0..{self.n_layer - 1}")
        if match and int(match.group(2)) == self.n_layer - 1:
            raise HookConfigError(
                f"node {node} is in the last layer ({self.n_layer - 1}), which keeps only the "
                f"rows that produce logits; choose a layer from 0 to {self.n_layer - 2}")
        if self.nodes and node not in self.nodes:
            prefix = match.group(1) if match else node
            similar = sorted(n for n in self.nodes if n.startswith(prefix))[:5]
            hint = f"; similar nodes: {', '.join(similar)}" if similar else ""
            raise HookConfigError(f"node {node} is not in this model's graph{hint}")
        info = self.nodes.get(node)
        if info is not None and info.type != GGML_TYPE_F32:
            raise HookConfigError(f"node {node} has ggml type {info.type}; operations need f32")
        if info is not None and info.ne0 != self.n_embd:
            raise HookConfigError(
                f"node {node} has rows of width {info.ne0}; operations need n_embd "
                f"({self.n_embd}) wide rows, as in l_out-N")

    def _check_seq(self, seq: int | None) -> int:
        if seq is None:
            return -1
        if not isinstance(seq, (int, np.integer)) or not 0 <= seq < MAX_SEQUENCES:
            raise HookConfigError(f"sequence id {seq!r} is outside 0..{MAX_SEQUENCES - 1}")
        return int(seq)

    def _check_vector(self, vector: np.ndarray, name: str, unit: bool) -> np.ndarray:
        array = np.asarray(vector)
        if array.dtype != np.float32:
            raise HookConfigError(
                f"{name} has dtype {array.dtype}; pass float32 (e.g. .astype(np.float32))")
        if array.shape != (self.n_embd,):
            raise HookConfigError(
                f"{name} has shape {array.shape}; this model needs ({self.n_embd},)")
        if not np.all(np.isfinite(array)):
            raise HookConfigError(f"{name} contains NaN or infinite values")
        if unit:
            norm = float(np.linalg.norm(array.astype(np.float64)))
            if abs(norm - 1.0) > 1e-3:
                raise HookConfigError(f"{name} must have unit norm for ablation; got {norm:.6g}")
        vec = np.ascontiguousarray(array, dtype=np.float32).copy()
        self._keep.append(vec)
        return vec

    def _check_readout(self, readout: Readout) -> tuple[np.ndarray, ...]:
        basis_t = np.asarray(readout.basis_t)
        if basis_t.dtype != np.float32 or basis_t.ndim != 2:
            raise HookConfigError(
                f"readout basis must be a float32 array of shape (rank, n_embd); got "
                f"{basis_t.dtype} of shape {basis_t.shape}")
        if basis_t.shape[1] != self.n_embd:
            raise HookConfigError(
                f"readout basis has width {basis_t.shape[1]}; this model needs n_embd "
                f"{self.n_embd}")
        rank = basis_t.shape[0]
        arrays = [np.ascontiguousarray(basis_t).copy()]
        for name in ("mean", "scale", "weight"):
            values = np.asarray(getattr(readout, name))
            if values.dtype != np.float32 or values.shape != (rank,):
                raise HookConfigError(
                    f"readout {name} must be float32 of shape ({rank},); got {values.dtype} "
                    f"of shape {values.shape}")
            arrays.append(np.ascontiguousarray(values).copy())
        if np.any(arrays[2] <= 0):
            raise HookConfigError("readout scale must be positive in every component")
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise HookConfigError("readout arrays contain NaN or infinite values")
        return tuple(arrays)

    def _check_op(self, op: int) -> int:
        if op < 0:
            message = self._lib.lrg_state_error(self._state).decode()
            self._lib.lrg_clear_error(self._state)
            raise HookConfigError(message)
        return op
