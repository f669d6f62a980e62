"""A benchmark grid: its config, its cells and their content hashes, and the loop that runs them."""
