"""``python -m nin`` runs the command-line interface (useful where the console script is not installed)."""
from nin.cli import main

raise SystemExit(main())
