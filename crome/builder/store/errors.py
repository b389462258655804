"""The errors the run store raises."""

from __future__ import annotations


class RunStoreError(RuntimeError):
    """The run store cannot be opened or used as asked."""


class RunInUseError(RunStoreError):
    """Another process (or this one) holds the run open for writing."""
