"""`python -m alphaedit_lite ...` is the same as the `alphaedit-lite` command."""
from .cli import main

raise SystemExit(main())
