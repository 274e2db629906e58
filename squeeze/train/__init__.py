"""Training machinery shared by the passes that train (distill, prune recovery, QAT): losses and feature taps."""
