"""``python -m memstress.service``: parse the command line, then serve until SIGTERM."""

from memstress.service.cli import main

raise SystemExit(main())
