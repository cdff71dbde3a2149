"""Nudge: a self-hostable customer lifecycle platform."""

__version__ = "0.1.0"
