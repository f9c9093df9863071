"""Report scale: write a metrics.jsonl of N lines (default 1,000,000), time write_report on it.

Prints the time and the peak memory of building the report (tracemalloc: Python-allocated
bytes, including numpy; plus the process's peak RSS) next to the size of the input, to show
memory stays bounded: the report streams the file and downsamples every plot.

    .venv/bin/python benchmarks/report_scale.py [--lines 1000000] [--dir /tmp/babysit-scale]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import time
import tracemalloc
from pathlib import Path

from babysit.report.html import write_report

PARAMS = [f"layer{i}.{kind}" for i in range(4) for kind in ("weight", "bias")]
LAYERS = [f"layer{i}.relu" for i in range(3)]


def _probe_values(name: str, lr: float, rng: random.Random) -> dict[str, object]:
    if name == "update_ratio":  # ||dw|| / ||w|| scales with the lr
        return {p: lr * 1e-2 * (1 + rng.random()) for p in PARAMS}
    if name == "grad_norm":
        return {p: 0.5 + rng.random() for p in PARAMS}
    stats = {"mean": 0.4, "std": 0.6 + 0.1 * rng.random(), "dead": 0.1 * rng.random()}
    return {layer: {**stats, "saturated": None} for layer in LAYERS}


def write_metrics(path: Path, lines: int, *, steps_per_epoch: int = 5000, seed: int = 0) -> None:
    """About 4 batch records per probe record; an epoch record every ``steps_per_epoch``."""
    rng = random.Random(seed)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    written, step = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < lines:
            step += 1
            epoch = step / steps_per_epoch
            lr = 0.1 * 0.5 ** math.floor(epoch / 20)
            loss = 2.3 * math.exp(-epoch / 15) + 0.2 + 0.15 * rng.random()
            batch = {"loss": loss, "data_loss": loss - 0.01, "reg_loss": 0.01, "lr": lr, "mu": 0.9}
            records: list[dict[str, object]] = [
                {"kind": "batch", "step": step, "epoch": epoch, **batch}
            ]
            if step % 4 == 0:
                name = ("update_ratio", "act_stats", "grad_norm")[(step // 4) % 3]
                values = _probe_values(name, lr, rng)
                records.append(
                    {"kind": "probe", "step": step, "epoch": epoch, "name": name, "values": values}
                )
            if step % 2000 == 0:
                edges = [i / 10 for i in range(31)]
                hist = {"edges": edges, "counts": [rng.randrange(1000) for _ in range(30)]}
                values = dict.fromkeys(LAYERS, hist)
                records.append(
                    {
                        "kind": "probe",
                        "step": step,
                        "epoch": epoch,
                        "name": "act_hist",
                        "values": values,
                    }
                )
            if step % steps_per_epoch == 0:
                scores = {
                    "train_loss": loss,
                    "train_acc": 1 - loss / 3,
                    "val_loss": loss + 0.1,
                    "val_acc": 1 - loss / 2.8,
                }
                records.append(
                    {"kind": "epoch", "epoch": step // steps_per_epoch, "step": step, **scores}
                )
            for record in records:
                f.write(dumps(record) + "\n")
            written += len(records)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/babysit-report-scale"))
    parser.add_argument(
        "--no-trace", action="store_true", help="skip the second, tracemalloc-ed pass (~4x slower)"
    )
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    metrics = args.dir / "metrics.jsonl"
    t0 = time.perf_counter()
    write_metrics(metrics, args.lines)
    size_mb = metrics.stat().st_size / 2**20
    print(f"wrote {args.lines:,} lines ({size_mb:.0f} MiB) in {time.perf_counter() - t0:.1f} s")

    rss_before = _rss_mib()
    t0 = time.perf_counter()
    report = write_report(args.dir)
    seconds = time.perf_counter() - t0
    rss_after = _rss_mib()
    html_mb = report.stat().st_size / 2**20
    pngs = len(list((args.dir / "plots").iterdir()))
    print(f"report: {report} ({html_mb:.2f} MiB, {pngs} PNGs)")
    print(f"time: {seconds:.1f} s ({args.lines / seconds:,.0f} lines/s)")
    grew = rss_after - rss_before
    print(f"peak RSS: {rss_after:.0f} MiB ({grew:+.0f} MiB in the report; input {size_mb:.0f} MiB)")
    if not args.no_trace:
        tracemalloc.start()
        write_report(args.dir)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"peak traced memory (second pass, tracemalloc): {peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
