"""``python -m service``: parse the command line, then serve until SIGTERM."""

from service.cli import main

raise SystemExit(main())
