"""``python -m lossbarcode``: the command-line interface."""

from lossbarcode.cli import main

raise SystemExit(main())
