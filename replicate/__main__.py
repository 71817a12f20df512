"""``python -m replicate`` runs the command line."""

from replicate.cli import main

raise SystemExit(main())
