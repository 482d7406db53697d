"""Where the kit finds things: the project root, shipped data, shared evaluation data, caches."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent


def shipped_data_dir() -> Path:
    """The data the kit ships (tiny world, subword world, requests).

    In a checkout: ``data/`` beside the package. Installed from a wheel: the folder the wheel
    filled, ``<prefix>/share/alphaedit-lite/data`` (found through the installed distribution's
    file list, so ``pip install --prefix`` works too). ``$ALPHAEDIT_SHIPPED_DATA`` overrides both.
    """
    env = os.environ.get("ALPHAEDIT_SHIPPED_DATA")
    if env:
        return Path(env)
    here = PROJECT_ROOT / "data"
    if (here / "tiny_world").is_dir():
        return here
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        files = distribution("alphaedit-lite").files or []
        for f in files:
            parts = Path(str(f)).parts
            if "share" in parts and parts[-2:] == ("tiny_world", "config.json"):
                return Path(f.locate()).resolve().parent.parent
    except (ImportError, PackageNotFoundError):
        pass
    return Path(sys.prefix) / "share" / "alphaedit-lite" / "data"


DATA_DIR = shipped_data_dir()


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
