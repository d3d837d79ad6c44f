"""CLI sub-commands (placeholder)."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the CLI."""
