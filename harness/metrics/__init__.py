"""The built-in metrics (perplexity, zero-shot, size, memory, speed) and what they measure with."""
