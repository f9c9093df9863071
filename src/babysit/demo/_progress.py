"""The demo on screen: a header per step, a progress bar for the search's trials."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from babysit.tuning.progress import SearchCallback, Status

__all__ = ["StepSearchProgress", "header"]


def header(console: Console, index: int, count: int, title: str) -> None:
    """``── step 3/6: Hyperparameter search ──``"""
    console.rule(f"[bold]step {index}/{count}: {title}", align="left")


class StepSearchProgress(SearchCallback):
    """One progress bar per stage (trials done of the stage's), then the stage's best."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Progress | None = None
        self.task: Any = None
        self.metric = "value"
        self.last: Status | None = None

    def on_search_start(self, info: dict[str, Any]) -> None:
        self.metric = info.get("metric", "value")

    def on_stage_start(self, stage: int, record: dict[str, Any]) -> None:
        ranges = ", ".join(f"{k} {v}" for k, v in record["ranges"].items())
        self.console.print(
            f"stage {stage}: {record['trials']} trials x {record['epochs']:g} epochs "
            f"({record.get('executor', 'trainer')}): {ranges}",
            markup=False,
            highlight=False,
        )
        self.bar = Progress(
            TextColumn(f"  stage {stage}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("trials", total=record["trials"], best="")
        self.bar.start()

    def on_status(self, status: Status) -> None:
        self.last = status
        if self.bar is not None:
            best = "" if status.best is None else f"best {self.metric} {status.best:.4f}"
            self.bar.update(self.task, completed=status.done, best=best)

    def on_stage_end(self, stage: int, warnings: list[dict[str, Any]]) -> None:
        self.on_search_end()
        last = self.last
        best = "" if last is None or last.best is None else f": best {self.metric} {last.best:.4f}"
        self.console.print(f"stage {stage} done{best}", markup=False, highlight=False)
        for w in warnings:
            self.console.print(
                f"  border warning: {w['param']} best near the {w['side']} end "
                f"({w['value']:.3g} in [{w['low']:.3g}, {w['high']:.3g}])",
                markup=False,
                highlight=False,
            )

    def on_search_end(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
