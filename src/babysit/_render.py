"""Rich tables for the command line, from any report with ``table()`` and ``footer()``."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.table import Table

__all__ = ["TabularReport", "print_report"]

_VERDICT_STYLE = {"ok": "green", "warn": "yellow", "inconclusive": "cyan", "fail": "bold red"}


class TabularReport(Protocol):
    def table(self) -> tuple[list[str], list[list[str]]]: ...

    def footer(self) -> list[str]: ...


def print_report(report: TabularReport, *, title: str, console: Console | None = None) -> None:
    """Print the report as a rich table (verdicts coloured), then its footer lines."""
    console = console or Console(width=None if Console().is_terminal else 200)
    head, rows = report.table()
    verdict_col = head.index("verdict") if "verdict" in head else -1
    table = Table(title=title, title_justify="left", show_lines=False)
    for name in head:
        table.add_column(name, overflow="fold", no_wrap=name in ("verdict", "checked", "kinks"))
    for row in rows:
        cells = list(row)
        if verdict_col >= 0:
            style = _VERDICT_STYLE.get(cells[verdict_col], "")
            cells[verdict_col] = (
                f"[{style}]{cells[verdict_col]}[/]" if style else cells[verdict_col]
            )
        table.add_row(*cells)
    console.print(table)
    for line in report.footer():
        console.print(line, highlight=False, markup=False)
