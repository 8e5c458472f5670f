"""Numbered, readable demo output and the pass/fail tally shared by the demo's parts."""

from __future__ import annotations

import sys
import time


class Steps:
    def __init__(self, out=None, first_step: int = 1):
        self.out = out
        self.step = first_step - 1
        self.ok = True

    def say(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def next(self, title: str) -> None:
        self.step += 1
        self.say(f"{self.step}. {title}")

    def timed(self, what: str, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        self.say(f"   {what} ({(time.perf_counter() - start) * 1000:.0f} ms)")
        return value

    def check(self, label: str, passed: bool) -> bool:
        self.ok &= bool(passed)
        self.say(f"   {label}: {'ok' if passed else 'FAILED'}")
        return bool(passed)

    def failed(self, why: str) -> None:
        self.ok = False
        self.say(f"   FAILED: {why}")
