"""The operator CLI: one module per group of sub-commands, assembled by :mod:`jmapmono.cli.main`."""
