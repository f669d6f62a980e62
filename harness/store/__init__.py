"""The results store: one record per cell, claims, and the SQLite leaderboard."""
