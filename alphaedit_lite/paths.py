"""Where the kit finds things: the project root, shipped data, shared evaluation data, caches."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
DATA_DIR = PROJECT_ROOT / "data"


def shared_data_dir() -> Path | None:
    """The folder of real evaluation data (CounterFact, zsRE, knowns, WikiText-2), if present.

    Looks at ``$ALPHAEDIT_DATA`` first, then ``../shared/data`` beside the project checkout.
    Returns ``None`` when neither exists (users then pass their own paths or go online).
    """
    env = os.environ.get("ALPHAEDIT_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(PROJECT_ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def cache_dir() -> Path:
    """User cache folder for dequantized weights, key statistics and prefixes.

    ``$ALPHAEDIT_CACHE`` overrides; otherwise ``$XDG_CACHE_HOME/alphaedit-lite`` or
    ``~/.cache/alphaedit-lite``.
    """
    env = os.environ.get("ALPHAEDIT_CACHE")
    if env:
        p = Path(env)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        p = base / "alphaedit-lite"
    p.mkdir(parents=True, exist_ok=True)
    return p
