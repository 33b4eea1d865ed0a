"""Loading a GGUF model through llama.cpp, with its vocabulary and metadata."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import struct
from pathlib import Path

import llama_cpp

from lrgate_cpp.fingerprint import ModelFingerprint

__all__ = ["Model", "ModelError", "ModelFingerprint", "check_gguf_file"]

log = logging.getLogger(__name__)
llama_log = logging.getLogger("lrgate_cpp.llama_cpp")

_GGUF_MAGIC = b"GGUF"
# enum ggml_log_level in ggml.h of llama-cpp-python 0.3.36: NONE 0, DEBUG 1,
# INFO 2, WARN 3, ERROR 4, CONT 5 (a continued line).
_LOG_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING,
               4: logging.ERROR, 5: logging.DEBUG}


class ModelError(ValueError):
    """A model file is missing, not GGUF, truncated, or rejected by llama.cpp."""


@llama_cpp.llama_log_callback
def _forward_llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp writes to stderr unless a callback takes its messages; route
    # them to logging so that a CLI prints only what the user asked for.
    llama_log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", text.decode("utf-8", "replace").rstrip())


_BACKEND_READY = False


def _init_backend() -> None:
    global _BACKEND_READY
    if not _BACKEND_READY:
        llama_cpp.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _BACKEND_READY = True


def check_gguf_file(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` exists and starts like a GGUF file; return it as a Path.

    Raises:
        ModelError: the file is missing, empty, a directory, or not GGUF.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"model file {path} not found")
    if path.is_dir():
        raise ModelError(f"model path {path} is a directory; pass a .gguf file")
    with path.open("rb") as stream:
        header = stream.read(8)
    if len(header) < 8 or header[:4] != _GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    version = struct.unpack("<I", header[4:8])[0]
    if version not in (2, 3):
        raise ModelError(f"{path} has GGUF version {version}; llama.cpp reads versions 2 and 3")
    return path


def _gguf_architecture(path: Path) -> str | None:
    """Return a GGUF file's general.architecture, or None when it cannot be read."""
    import gguf

    try:
        field = gguf.GGUFReader(path).get_field("general.architecture")
        return None if field is None else str(field.contents())
    except (ValueError, IndexError, OSError):
        return None


class Model:
    """A GGUF model loaded by llama.cpp (weights only; contexts come later).

    Args:
        path: GGUF file.
        n_gpu_layers: layers to offload to a GPU or Metal; 0 keeps all on CPU.
        use_extra_bufts: let llama.cpp repack weights into extra CPU buffer
            types. Off by default: with llama-cpp-python 0.3.36 on a CPU with
            AMX, the AMX matmul crashed (SIGSEGV) on multi-token batches.
    """

    def __init__(self, path: str | os.PathLike[str], n_gpu_layers: int = 0,
                 use_extra_bufts: bool = False) -> None:
        self._ptr = None
        self.path = check_gguf_file(path)
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = use_extra_bufts
        self._ptr = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._ptr:
            if _gguf_architecture(self.path) == "lrgate":
                raise ModelError(f"{self.path} is an lrgate gate bundle, not a model; pass it "
                                 "with --bundle and give the model with --model")
            raise ModelError(
                f"llama.cpp could not load {self.path}: the file is truncated, corrupt, or of "
                "an unsupported architecture (run with --verbose to see llama.cpp's log)"
            )
        self.vocab = llama_cpp.llama_model_get_vocab(self._ptr)
        self.n_embd = int(llama_cpp.llama_model_n_embd(self._ptr))
        self.n_layer = int(llama_cpp.llama_model_n_layer(self._ptr))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._ptr))
        self.architecture = self.metadata("general.architecture") or "unknown"
        self.name = self.metadata("general.name") or self.path.stem
        self.chat_template = self.metadata("tokenizer.chat_template")
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_token = int(llama_cpp.llama_vocab_bos(self.vocab))

    @property
    def ptr(self) -> llama_cpp.llama_model_p:
        if not self._ptr:
            raise ModelError(f"model {self.path} is closed")
        return self._ptr

    def metadata(self, key: str) -> str | None:
        """Return a GGUF metadata value as a string, or None when absent."""
        size = 256
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buffer, size)
            if n < 0:
                return None
            if n < size:
                return buffer.value.decode("utf-8", "replace")
            size = n + 1

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Tokenize text; special tokens written as text (e.g. ``<|im_start|>``) are parsed."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        tokens = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special,
                                     parse_special)
        if n < 0:
            capacity = -n
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity,
                                         add_special, parse_special)
        return list(tokens[:n])

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """Return the bytes of one token's text piece."""
        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, -n, 0, special)
        return buffer.raw[:n]

    def detokenize(self, tokens: list[int], special: bool = False) -> str:
        return b"".join(self.token_bytes(t, special) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def special_token_text(self, which: str) -> str:
        """Return the text of the BOS or EOS token ('bos' or 'eos'), or ''."""
        token = (llama_cpp.llama_vocab_bos if which == "bos" else llama_cpp.llama_vocab_eos)(self.vocab)
        return "" if token < 0 else self.token_bytes(token, special=True).decode("utf-8", "replace")

    def fingerprint(self) -> ModelFingerprint:
        """Identify the model by architecture, widths and a tokenizer digest.

        The tokenizer digest hashes the vocabulary size and the text of 512
        tokens spread evenly over the vocabulary, which separates tokenizers
        without reading all of a large vocabulary.
        """
        digest = hashlib.sha256(str(self.n_vocab).encode())
        for token in range(0, self.n_vocab, max(1, self.n_vocab // 512)):
            digest.update(self.token_bytes(token, special=True))
        return ModelFingerprint(self.architecture, self.n_embd, self.n_layer,
                                digest.hexdigest()[:16], self.name)

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_model_free(self._ptr)
            self._ptr = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
