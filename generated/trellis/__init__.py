"""Trellis: a workflow and job orchestration server."""

__version__ = "0.1.0"
