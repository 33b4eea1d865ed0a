"""Shared fixtures: the real GGUF models from PyPI packages and the data folder."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lrgate_cpp.model import Model
from lrgate_cpp.template import encode_messages, template_for
from lrgate_cpp.zoo import resolve_model_path

TEST_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m")


def data_root() -> Path:
    """Return the shared data folder: ``$LRGATE_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("LRGATE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not root.exists():
        pytest.fail(f"shared data folder {root} not found; set LRGATE_DATA")
    return root


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import a script from benchmarks/, which is not a package, as a module."""
    # The scripts import their helper modules from their own folder, as
    # they do when run with `python benchmarks/NAME.py`.
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look up the defining module in sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_MODELS: dict[str, Model] = {}


def load_test_model(name: str) -> Model:
    """Load a test model once per session."""
    if name not in _MODELS:
        _MODELS[name] = Model(resolve_model_path(name))
    return _MODELS[name]


@pytest.fixture(scope="session")
def smollm() -> Model:
    return load_test_model("smollm2-135m")


@pytest.fixture(scope="session", params=TEST_MODELS)
def any_model(request: pytest.FixtureRequest) -> Model:
    return load_test_model(request.param)


def chat_tokens(model: Model, text: str) -> list[int]:
    """Render one user turn with the model's template and tokenize it."""
    return encode_messages(model, template_for(model), [{"role": "user", "content": text}])
