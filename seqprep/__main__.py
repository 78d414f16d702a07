"""``python -m seqprep`` runs the command-line interface."""

from seqprep.cli import main

raise SystemExit(main())
