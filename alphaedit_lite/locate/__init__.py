"""What to edit and where: edit requests, keys K1, target values V1, K0 statistics, causal tracing."""
