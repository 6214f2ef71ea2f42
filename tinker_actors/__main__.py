"""``python -m tinker_actors``: the same as the ``tinker-actors`` command."""

from tinker_actors.cli import main

raise SystemExit(main())
