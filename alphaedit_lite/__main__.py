"""`python -m alphaedit_lite ...` is the same as the `alphaedit-lite` command."""
from alphaedit_lite.cli.app import main

raise SystemExit(main())
