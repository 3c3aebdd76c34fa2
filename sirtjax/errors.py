"""Exceptions that the command line turns into one clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path


class SirtjaxError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class InputError(SirtjaxError):
    """A file or parameter the user gave is unusable; the message names it and the problem."""

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
