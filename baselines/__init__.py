"""Established pruning methods, each an ordinary prunebench plugin."""
