"""Shared pytest hooks: the bad-input table printed at the end of the run."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    """Print every bad-input row that ran (tests/test_bad_input.py) as input, command, exit code, message."""
    import sys

    module = sys.modules.get("test_bad_input") or sys.modules.get("tests.test_bad_input")
    rows = getattr(module, "ROWS", [])
    if not rows:
        return
    terminalreporter.section("bad input: one line, exit 2, nothing written")
    for what, command, code, message in rows:
        terminalreporter.write_line(f"{what:<42} | exit {code} | {command}")
        terminalreporter.write_line(f"{'':<42} |        {message}")
