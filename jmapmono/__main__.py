"""``python -m jmapmono``: patch for gevent first when the command needs it, then run the CLI."""

import sys

from jmapmono.main import main

sys.exit(main())
