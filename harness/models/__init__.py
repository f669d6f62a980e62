"""Causal LMs: loading (aliases, local, GGUF, hub), the decoder walk, coupled structures, checkpoints."""
