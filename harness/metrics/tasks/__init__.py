"""lm-eval task definitions that ship with prunebench and work offline."""
