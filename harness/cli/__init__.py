"""The prunebench command line."""
