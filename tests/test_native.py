"""The import-time checks of the native hook library."""

from lrgate_cpp.native import load_hook_library


def test_build_matches_installed_llama_cpp():
    import importlib.metadata

    lib = load_hook_library()
    assert lib.lrg_build_info(0).decode() == importlib.metadata.version("llama-cpp-python")
    assert len(lib.lrg_build_info(1)) == 64


def test_tensor_layout_check_passes():
    assert load_hook_library().lrg_check_tensor_layout() == 0
