"""``python -m mcp_server`` runs the ``chatcap`` command."""

import sys

from mcp_server.cli import main

sys.exit(main())
