"""``python -m growlm``: the same as the ``growlm`` command."""

from growlm.cli import main

raise SystemExit(main())
