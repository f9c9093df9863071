"""The run page's probe sections: one per registered probe, drawn by the kind it declares.

``monitor.probes.PROBES`` says what each probe records and how to show it; probes naming the
same ``section`` share one figure (``update_ratio`` and ``update_ratio_1d``). A section
whose probe has no readings says what would record it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from babysit.monitor.probes import PROBES, ProbeKind, ProbeSpec
from babysit.report import _probe_plots, plots
from babysit.report._page import Html, Part, SectionSpec, figure, note
from babysit.report._run_data import RunData
from babysit.report._untrusted import read_image

__all__ = ["PROBE_SECTIONS", "probe_sections"]


def _no_probe(spec: ProbeSpec) -> Html:
    """Why a probe's section is empty: the loop was not watched (or the probe not enabled)."""
    extra = f" {spec.needs}" if spec.needs else ""
    return note(
        f"No {spec.name} probes were logged: they need babysit.watch (babysit train uses it)"
        f"{extra}."
    )


def _per_layer_section(run: RunData, specs: list[ProbeSpec]) -> list[Part]:
    lead = specs[0]
    streams = {k: s for spec in specs for k, s in run.scalars.get(spec.name, {}).items()}
    if not streams:
        return [_no_probe(lead)]
    fig = _probe_plots.per_layer_figure(
        streams,
        title=lead.title,
        ylabel=lead.label,
        log_y=lead.log_y,
        band=lead.band,
        target=lead.target,
    )
    return [figure(lead.name, fig, f"{lead.label} per layer", lead.caption)]


def _stats_section(run: RunData, specs: list[ProbeSpec]) -> list[Part]:
    (spec,) = specs
    stats = run.stats.get(spec.name)
    if not stats:
        return [_no_probe(spec)]
    panels = [(s.key, s.title, s.fraction) for s in spec.stats]
    fig = _probe_plots.stats_figure(stats, panels)
    return [figure(spec.name, fig, f"{spec.title}, per layer", spec.caption)]


def _hist_section(run: RunData, specs: list[ProbeSpec]) -> list[Part]:
    (spec,) = specs
    layers = run.hists.get(spec.name)
    if not layers:
        return [_no_probe(spec)]
    fig = _probe_plots.histogram_figure(layers, what=spec.label, unit=run.unit)
    times = {h.x for hs in layers.values() for h in hs}
    caption = (
        "Up to 6 snapshots per layer, coloured from early (dark) to late (yellow)."
        if len(times) > 1
        else "One snapshot per layer (the run was watched for one histogram window)."
    )
    return [figure(spec.name, fig, f"{spec.label} histograms per layer", caption)]


def _image_section(run: RunData, specs: list[ProbeSpec]) -> list[Part]:
    """The images the monitor saved (first, middle, last), read from the run dir.

    Each is untrusted: one outside the run dir, too large or not an image is left out
    with a note (:func:`~babysit.report._untrusted.read_image` caps its pixels).
    """
    (spec,) = specs
    saved = run.images.get(spec.name)
    if not saved:
        return [_no_probe(spec)]
    root = run.run_dir.resolve()
    images: list[tuple[str, np.ndarray]] = []
    problems: list[Part] = []
    for x, rel in saved:
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            problems.append(note(f"Image {rel} is outside the run dir: not shown."))
            continue
        try:
            images.append((f"{run.unit} {x:.3g}", read_image(path)))
        except (OSError, ValueError, SyntaxError) as exc:
            problems.append(note(f"Image {rel} could not be read ({exc})."))
    if not images:
        return problems
    fig = plots.images_figure(images)
    return [figure(spec.name, fig, spec.title, spec.caption), *problems]


# how each kind of probe is drawn: (run, the probes of one section) -> parts
PROBE_SECTIONS: dict[ProbeKind, Callable[[RunData, list[ProbeSpec]], list[Part]]] = {
    "per_layer_scalar": _per_layer_section,
    "per_layer_stats": _stats_section,
    "histogram": _hist_section,
    "image": _image_section,
}


def probe_sections() -> list[SectionSpec]:
    """A section per registered probe, in registration order; probes sharing one go together."""
    groups: dict[str, list[ProbeSpec]] = {}
    for spec in PROBES.values():
        groups.setdefault(spec.anchor, []).append(spec)
    return [
        SectionSpec(anchor, specs[0].title, _drawing(specs)) for anchor, specs in groups.items()
    ]


def _drawing(specs: list[ProbeSpec]) -> Callable[[RunData], list[Part]]:
    """The section function of one group of probes (drawn as the first one's kind)."""
    draw = PROBE_SECTIONS[specs[0].kind]
    return lambda run: draw(run, specs)
