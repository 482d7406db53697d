"""The kit's version (one place; pyproject.toml carries the same string, tests/test_packaging.py checks it)."""
__version__ = "0.1.0"
