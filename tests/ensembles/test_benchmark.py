"""benchmarks/ensembles.py runs (its smoke size) and prints every row and every size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_benchmark_prints_its_table_and_accuracy_against_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location(
        "ensembles_bench", ROOT / "benchmarks" / "ensembles.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("$ python benchmarks/ensembles.py --quick --out")
    for name in (
        "mean single model",
        "ensemble of 5 seeds",
        "top-5 of a search",
        "5 checkpoints of one run",
        "distilled student",
        "student on labels",
    ):
        assert name in text
    sizes = text.split("accuracy against ensemble size")[1].splitlines()[2:8]
    assert [int(line.split()[0]) for line in sizes] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "top" / "ensemble.json").is_file()
