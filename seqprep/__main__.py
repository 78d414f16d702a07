"""``python -m seqprep`` runs the command-line interface."""

from seqprep.tools.cli import main

raise SystemExit(main())
