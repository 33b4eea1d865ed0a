"""GGUF container of gate bundles: metadata and tensors with a version and a digest.

This module handles no gate logic. It writes ``lrgate.*``
metadata and named tensors under ``general.architecture = "lrgate"``, adds
``lrgate.sha256``, a digest of all other ``lrgate.*`` metadata and of all
tensors, and on reading checks the architecture, the format version and the
digest, so a damaged or foreign file raises :class:`BundleError`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import gguf
import numpy as np

__all__ = [
    "ARCHITECTURE",
    "FORMAT_VERSION",
    "BundleError",
    "compute_digest",
    "read_gguf",
    "write_gguf",
]

FORMAT_VERSION = 1
ARCHITECTURE = "lrgate"
_DIGEST_KEY = "lrgate.sha256"
_VERSION_KEY = "lrgate.format_version"
_STRING = gguf.GGUFValueType.STRING


class BundleError(ValueError):
    """A bundle file is missing, damaged, of another format version, or not a bundle."""


def compute_digest(metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """Return the SHA-256 hex digest of metadata values and tensors, in key order."""
    digest = hashlib.sha256()
    for key in sorted(metadata):
        digest.update(f"{key}={metadata[key]!r};".encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_gguf(
    path: Path, metadata: dict[str, tuple[gguf.GGUFValueType, Any]], tensors: dict[str, np.ndarray]
) -> None:
    """Write metadata, tensors, the format version and the digest to a GGUF file at ``path``.

    Args:
        path: file to create or overwrite.
        metadata: ``lrgate.*`` key to (GGUF value type, plain Python value).
        tensors: name to a C-contiguous array of a dtype GGUF stores.
    """
    metadata = {_VERSION_KEY: (gguf.GGUFValueType.UINT32, FORMAT_VERSION), **metadata}
    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    for key, (value_type, value) in metadata.items():
        # add_key_value, unlike add_string, also writes empty strings.
        writer.add_key_value(key, value, value_type)
    values = {key: value for key, (_, value) in metadata.items()}
    writer.add_key_value(_DIGEST_KEY, compute_digest(values, tensors), _STRING)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a file written by :func:`write_gguf`.

    Returns:
        ``(metadata, tensors)``: the ``lrgate.*`` values, without the digest
        and format version, and copies of the tensors.

    Raises:
        BundleError: if the file is missing, not GGUF, not an lrgate file,
            of another format version, truncated, or fails the digest check.
    """
    if not path.is_file():
        raise BundleError(f"gate bundle {path} not found")
    # The gguf 0.19 reader has no error type of its own, so a damaged file
    # surfaces as any of these built-in errors.
    try:
        reader = gguf.GGUFReader(path)
        fields = {name: field.contents() for name, field in reader.fields.items()}
        tensors = {tensor.name: np.array(tensor.data) for tensor in reader.tensors}
    except (
        ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, TypeError
    ) as error:
        raise BundleError(
            f"{path} is not a readable GGUF file: it may be truncated or damaged, so refit "
            f"or copy it again (the reader stopped with {type(error).__name__})"
        ) from error
    del reader

    architecture = fields.get("general.architecture")
    if architecture != ARCHITECTURE:
        raise BundleError(
            f"{path} is a GGUF file but not a gate bundle (general.architecture is "
            f"{architecture!r}, expected {ARCHITECTURE!r}); pass a bundle, not a model file"
        )
    version = fields.get(_VERSION_KEY)
    if version != FORMAT_VERSION:
        raise BundleError(
            f"gate bundle {path} has format version {version}, but this lrgate reads version "
            f"{FORMAT_VERSION}; refit the bundle with this lrgate or use a matching release"
        )
    metadata = {key: value for key, value in fields.items() if key.startswith("lrgate.")}
    stored_digest = metadata.pop(_DIGEST_KEY, None)
    if stored_digest != compute_digest(metadata, tensors):
        raise BundleError(
            f"gate bundle {path} is corrupt: its contents do not match the stored SHA-256 "
            "digest; refit it or copy it again"
        )
    del metadata[_VERSION_KEY]
    return metadata, tensors
