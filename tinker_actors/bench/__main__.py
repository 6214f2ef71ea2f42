"""``python -m tinker_actors.bench sample|train ...``: the bench commands without the root CLI."""

from tinker_actors.bench.cli import main

raise SystemExit(main())
