"""``python -m jmapmono``: patch for gevent first, then hand over to the CLI."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from jmapmono.cli import main  # noqa: E402

sys.exit(main())
