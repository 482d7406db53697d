"""The numeric core (no model): second moments, null-space projectors, closed-form solvers, checks."""
