"""lrgate: a low-rank refusal gate for llama.cpp models."""
