"""Programs over the pieces below: sweep over sigma, timeline over checkpoints, probe and memorization checks."""
