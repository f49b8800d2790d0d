"""Kept only for ``ogp/cli.py`` (``ogp projections rebuild``), which imports ``rebuild`` from here and is being
changed on another branch: delete this module once it imports ``projections.history.projector``."""

from projections.history.projector import rebuild

__all__ = ["rebuild"]
