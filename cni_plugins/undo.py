"""Undo on a failed ADD: every plugin step that changes something registers how to take it back."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def undo_on_failure(plugin: str):
    """Yields a list to append ``(what, step)`` pairs to; when the block raises, the steps run newest first
    and the block's error is what propagates (a failing cleanup step is only reported on stderr, never
    instead of the error), so a failed ADD leaves nothing behind."""
    steps: list = []
    try:
        yield steps
    except BaseException:
        for what, step in reversed(steps):
            try:
                step()
            except Exception as exc:
                print(f"{plugin}: cleanup of {what} failed: {exc}", file=sys.stderr)
        raise
