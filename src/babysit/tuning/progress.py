"""What a search tells as it goes: :class:`SearchCallback` hooks and a rich renderer.

The master calls the hooks (library code never prints); :class:`SearchProgress`, the
one the CLI passes, renders them: a live table on a terminal (trials done, running,
best so far, ETA), one plain line per trial otherwise. A stage's border warnings and
the best trial are results: the CLI prints them from the returned ``Study``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["SearchCallback", "SearchProgress", "Status"]


@dataclass(frozen=True)
class Status:
    """Where the running stage stands (sent every poll of the master)."""

    stage: int
    stages: int
    epochs: float  # the stage's epochs per trial
    trials: int  # the stage's trial count
    done: int  # finished slots (complete, pruned, diverged, failed, lost retries)
    running: int
    states: dict[str, int] = field(default_factory=dict)  # finished trials by state
    best: float | None = None  # best complete score of this stage
    best_trial: int | None = None
    elapsed: float = 0.0  # seconds since the stage started (in this session)
    eta: float | None = None  # seconds left, from the trials finished in this session
    metric: str = "value"


class SearchCallback:
    """Base class with no-op hooks; override the ones you need."""

    def on_search_start(self, info: dict[str, Any]) -> None:
        """Once: ``{dir, name, storage, workers, stages}``."""

    def on_stage_start(self, stage: int, record: dict[str, Any]) -> None:
        """A stage begins: its record ``{epochs, trials, ranges}``."""

    def on_trial_end(self, record: dict[str, Any]) -> None:
        """A trial finished (summary.py's trial record), in trial-number order per poll."""

    def on_status(self, status: Status) -> None:
        """The running stage's counts, after every poll (about four times a second)."""

    def on_stage_end(self, stage: int, warnings: list[dict[str, Any]]) -> None:
        """A stage is done; its border warnings (also in the returned Study)."""

    def on_search_end(self) -> None:
        """Once, however the search ended (finished, interrupted, failed)."""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _score(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_score(v)}" for k, v in params.items())


class SearchProgress(SearchCallback):
    """Renders a search for a person on ``console`` (default stderr)."""

    def __init__(self, *, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live: Live | None = None
        self.last: Status | None = None
        self.metric = "value"

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def on_search_start(self, info: dict[str, Any]) -> None:
        self.metric = info.get("metric", "value")
        workers = info.get("workers", 1)
        self._line(
            f"babysit: search -> {info['dir']} ({workers} worker{'s' * (workers != 1)}, "
            f"storage {info['storage']})"
        )

    def on_stage_start(self, stage: int, record: dict[str, Any]) -> None:
        ranges = ", ".join(f"{k} {v}" for k, v in record["ranges"].items())
        pbt = " (population-based training)" if record.get("mode") == "pbt" else ""
        self._line(
            f"stage {stage}: {record['trials']} trials x {record['epochs']:g} epochs{pbt}: {ranges}"
        )
        if self.console.is_terminal:
            self.live = Live(console=self.console, transient=True, refresh_per_second=4)
            self.live.start()

    def on_trial_end(self, record: dict[str, Any]) -> None:
        if self.live is None:
            self._line(
                f"  trial {record['number']} {record['state']} "
                f"{self.metric} {_score(record['value'])}  {_params(record['params'])}"
            )

    def on_status(self, status: Status) -> None:
        self.last = status
        if self.live is None:
            return
        title = f"stage {status.stage} ({status.stage + 1} of {status.stages})"
        table = Table(title=title, title_justify="left")
        for name in ("done", "running", *status.states, f"best {status.metric}", "elapsed", "ETA"):
            table.add_column(name, justify="right")
        best = "-" if status.best is None else f"{status.best:.4g} (trial {status.best_trial})"
        table.add_row(
            f"{status.done}/{status.trials}",
            str(status.running),
            *(str(n) for n in status.states.values()),
            best,
            _duration(status.elapsed),
            _duration(status.eta),
        )
        self.live.update(table)

    def on_stage_end(self, stage: int, warnings: list[dict[str, Any]]) -> None:
        self.on_search_end()
        last, text = self.last, f"stage {stage}: done"
        if last is not None and last.stage == stage:
            counts = ", ".join(f"{n} {state}" for state, n in last.states.items())
            best = "" if last.best is None else f"; best {last.metric} {last.best:.4g}"
            text += f" ({counts}{best}{f' (trial {last.best_trial})' if best else ''})"
        self._line(text)

    def on_search_end(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
