"""``python -m llmlb_actors`` runs the ``llmlb`` command."""

from .cli import main

raise SystemExit(main())
