"""Studies over runs: `hexzd sweep` (a grid of runs), `hexzd league` (their
snapshots on one Elo scale) and `hexzd report` (their figures)."""
