"""New importance metrics (ACE and others), each an ordinary prunebench plugin."""
