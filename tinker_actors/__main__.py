from tinker_actors.cli import main

raise SystemExit(main())
