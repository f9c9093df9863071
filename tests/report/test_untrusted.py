"""A run dir is untrusted input: the report leaves out what is broken and says so on the page.

Issue 13, defect 5 (a 109 KB PNG of 30000 x 30000 pixels drove the report to 23.5 GB; deep
JSON) and the report's part of defect 7 (an invalid UTF-8 byte, a non-object JSON line,
NaN histogram edges, 200,000-deep JSON, malformed side files, ``plots`` being a file).
Each table row reproduced its defect before the fix: a traceback, or memory exhausted.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from babysit.cli import app
from babysit.report._run_data import load_run
from babysit.report._run_page import findings_section
from babysit.report.plots import to_png

runner = CliRunner()


class _Sections(HTMLParser):
    """The text of each <section id=...> of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self._current = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self._current = str(dict(attrs)["id"])
            self.text[self._current] = ""

    def handle_data(self, data: str) -> None:
        if self._current:
            self.text[self._current] += data


def _append(name: str, line: bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with open(run / name, "ab") as f:
            f.write(line)

    return damage


def _insert_line(line: bytes, at: int = 5) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / "metrics.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join([*lines[: at - 1], line, *lines[at - 1 :]]))

    return damage


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(data) and None


def _replace_by_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _hist_record(edges: list[object], counts: list[object]) -> bytes:
    values = {"fc1.relu": {"edges": edges, "counts": counts}}
    record = {"kind": "probe", "step": 28, "epoch": 1.0, "name": "act_hist", "values": values}
    return json.dumps(record).encode() + b"\n"


DEEP = b"[" * 200_000 + b"]" * 200_000

# (what is broken, how; the file named on the page; the reason it gives)
BROKEN = [
    ("invalid UTF-8 line", _insert_line(b'{"kind": "batch", "loss": 1.0, "x": "\xff"}\n'),
     "metrics.jsonl", "line 5: not valid UTF-8"),
    ("non-object line", _insert_line(b"[1, 2]\n"), "metrics.jsonl",
     "line 5: a JSON array, not an object"),
    ("200,000-deep line", _insert_line(DEEP + b"\n"), "metrics.jsonl",
     "nested deeper than 64 levels"),
    ("not JSON", _insert_line(b"{oops\n"), "metrics.jsonl", "line 5: not valid JSON"),
    ("NaN histogram edges", _append("metrics.jsonl", _hist_record(["nan"] * 3, [1, 2])),
     "metrics.jsonl histograms", "1 histogram snapshot(s) with non-finite"),
    ("unordered histogram edges", _append("metrics.jsonl", _hist_record([2, 1, 0], [1, 2])),
     "metrics.jsonl histograms", "unordered edges"),
    ("string histogram counts", _append("metrics.jsonl", _hist_record([0, 1, 2], ["a", 1])),
     "metrics.jsonl histograms", "non-finite"),
    ("200,000-deep findings.json", _write("findings.json", DEEP), "findings.json",
     "nested deeper than 64 levels"),
    ("findings.json not JSON", _write("findings.json", b"[{oops"), "findings.json",
     "not valid JSON"),
    ("findings.json not a list", _write("findings.json", b'{"code": 1}'), "findings.json",
     "expected a list of findings"),
    ("findings.json with a non-object", _write("findings.json", b'[1, {"code": "x"}]'),
     "findings.json", "not JSON objects were left out"),
    ("config.toml not TOML", _write("config.toml", b"[optim\nlr = "), "config.toml",
     "not valid TOML"),
    ("config.toml not UTF-8", _write("config.toml", b'[task]\nname = "\xff"\n'),
     "config.toml", "not valid UTF-8"),
    ("gradcheck.json of the wrong shape", _write("gradcheck.json", b"[]"), "gradcheck.json",
     "GradcheckReport.to_dict()"),
    ("sanity.json not UTF-8", _write("sanity.json", b'{"passed": "\xfe"}'), "sanity.json",
     "not valid UTF-8"),
    ("findings.json a directory", lambda run: _replace_by_dir(run / "findings.json"),
     "findings.json", "cannot be read"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "damage", "name", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_line_or_file_is_left_out_and_the_page_says_so(
    run_copy: Callable[[], Path],
    label: str,
    damage: Callable[[Path], None],
    name: str,
    reason: str,
) -> None:
    run = run_copy()
    damage(run)
    data = load_run(run)  # the page's data: no exception, the rest still read
    assert data.records["epoch"] == 6 and "loss" in data.batch, label
    said = " ".join(str(part) for part in findings_section(data))  # the page's first section
    assert f"Left out of this page: {name}: " in said and reason in said, (label, said)


@pytest.mark.parametrize("damage", [BROKEN[0][1], BROKEN[7][1]], ids=["utf-8", "deep findings"])
def test_the_report_command_draws_the_page_of_a_damaged_run_dir(
    make_run: Callable[..., Path], tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    run = make_run(tmp_path / "run", epochs=2, extras=False)
    (run / "findings.json").write_text("[]")
    damage(run)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = _Sections((run / "report.html").read_text(encoding="utf-8"))
    assert "Left out of this page: " in page.text["findings"]
    assert "No findings" in page.text["findings"] or "nested deeper" in page.text["findings"]


def _png_header_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` zero pixels: tiny compressed, huge decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    head = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


_REPORT_AND_PEAK = """
import resource, sys
from babysit.report.html import write_report
write_report(sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # MiB on Linux
"""


def _small_run_with_filters(make_run: Callable[..., Path], run: Path, bomb: bytes | None) -> Path:
    """A 2-epoch run whose filters probe names a good grid and ``bomb`` (or the grid twice)."""
    make_run(run, epochs=2, extras=False)
    (run / "filters").mkdir()
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().imshow([[0.0, 1.0], [1.0, 0.0]])
    (run / "filters" / "good.png").write_bytes(to_png(fig))
    (run / "filters" / "bomb.png").write_bytes(bomb if bomb is not None else to_png(fig))
    with open(run / "metrics.jsonl", "a") as f:
        for step, name in ((10, "good"), (20, "bomb")):
            values = {"path": f"filters/{name}.png"}
            record = {"kind": "probe", "step": step, "name": "filters", "values": values}
            f.write(json.dumps(record) + "\n")
    return run


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.parametrize("side", [12_000, 30_000])
def test_a_png_decompression_bomb_is_refused_before_it_is_decoded(
    make_run: Callable[..., Path], tmp_path: Path, side: int
) -> None:
    bomb = _png_header_bomb(side, side)
    assert len(bomb) < 200_000  # 109 KB declares 900 million pixels
    run = _small_run_with_filters(make_run, tmp_path / "run", bomb)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    # a limit on the address space: decoding would need 0.6 GB (12000^2 float32) to 3.4 GB
    limit = 4 * 2**30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def peak_mib(run_dir: Path) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _REPORT_AND_PEAK, str(run_dir)],
            capture_output=True,
            text=True,
            env=env,
            preexec_fn=cap,
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    # the same report without the bomb is the baseline: imports and plots cost the same in
    # both, so what the bomb adds is the difference (a decoded 12000^2 image is >= 137 MiB)
    plain = _small_run_with_filters(make_run, tmp_path / "plain", None)
    baseline, peak = peak_mib(plain), peak_mib(run)
    assert peak - baseline < 64, (baseline, peak)  # MiB: the bomb was never decoded
    page = (run / "report.html").read_text(encoding="utf-8")
    said = " ".join(_Sections(page).text["filters"].split())
    assert "more pixels than the 4194304 a report decodes" in said and "bomb.png" in said
    assert 'id="fig-filters"' in page  # the good grid is still drawn


@pytest.mark.parametrize("kind", ["file", "link"])
def test_plots_being_a_file_or_a_link_is_one_line_and_nothing_is_written(
    make_run: Callable[..., Path], tmp_path: Path, kind: str
) -> None:
    run = make_run(tmp_path / "run", epochs=2, extras=False)
    if kind == "file":
        (run / "plots").write_text("mine")
    else:
        (tmp_path / "elsewhere").mkdir()
        (run / "plots").symlink_to(tmp_path / "elsewhere")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "plots: is not a directory" in lines[0], lines
    assert not (run / "report.html").exists()
    assert (
        (run / "plots").read_text() == "mine"
        if kind == "file"
        else not any((tmp_path / "elsewhere").iterdir())
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the modes say")
@pytest.mark.parametrize("what", ["metrics.jsonl", "run dir"])
def test_an_unreadable_log_or_a_read_only_dir_is_one_line(
    run_copy: Callable[[], Path], what: str
) -> None:
    run = run_copy()
    target = run if what == "run dir" else run / what
    target.chmod(0o555 if what == "run dir" else 0)
    try:
        result = runner.invoke(app, ["report", str(run)])
    finally:
        target.chmod(0o755 if what == "run dir" else 0o644)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and str(run) in lines[0], lines
