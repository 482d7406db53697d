"""Running and measuring edits: evaluation metrics, sequential runs, drift, run records."""
