"""Static and interactive figures (matplotlib, plotly)."""
