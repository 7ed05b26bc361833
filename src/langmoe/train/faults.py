"""Fault injection for tests: make a training stage crash before a chosen step, to prove that it resumes exactly."""

from __future__ import annotations


class InjectedFault(RuntimeError):
    """Raised by `FailAfter` to simulate a crash (used to test that a killed run resumes exactly)."""


class FailAfter:
    """A batch source that raises `InjectedFault` when asked for step `step` (after `step` steps ran)."""

    def __init__(self, source, step: int):
        self.source, self.step = source, int(step)

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1):
        if step >= self.step:
            raise InjectedFault(f"injected fault before step {step + 1}")
        return self.source.get(step, micro, rank, world)


def maybe_fail(source, fail_at: int | None):
    """`source`, or `FailAfter(source, fail_at)` when a fault is requested."""
    return source if fail_at is None else FailAfter(source, fail_at)
