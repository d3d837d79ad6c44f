"""jmapmono: a JMAP mail server built for instant, efficient sync."""

__version__ = "0.1.0"
