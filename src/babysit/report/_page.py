"""The page machinery: sections registered by name on a page, rendered into one HTML file.

:data:`PAGES` is a :class:`~babysit._registry.Registry` of :class:`Page` (``"run"``, later
``"study"``, ``"ensemble"``, ``"demo"``); a page is a thin structure on a Registry of its
sections, in registration order. A section is a function ``data -> list[Html | Image]``
registered with :func:`section`; a page may also hold a source of sections known only when
it is drawn (the run page's probes: one section per registered probe), registered with
:meth:`Page.sections_from`. A new page is new sections on a new page name::

    @section("study", "best", title="Best trial")
    def best_trial(study: StudyData) -> list[Part]:
        return [table(["param", "value"], study.best.items())]

    render_page("study", study_data, study_dir, title="babysit study")

:func:`render_page` calls each section in order, saves every image as ``plots/<name>.png``
and embeds it as a data URI, so the page is one self-contained file: inline CSS, no
scripts, no fonts, nothing fetched (the CSP says so).
"""

from __future__ import annotations

import base64
import html
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from babysit._io import write_bytes_atomic
from babysit._registry import Registry
from babysit.errors import ReportError
from babysit.report.plots import to_png

__all__ = [
    "PAGES",
    "Html",
    "Image",
    "Page",
    "Part",
    "ReportError",
    "SectionSource",
    "SectionSpec",
    "figure",
    "fmt",
    "get_page",
    "note",
    "paragraph",
    "render_page",
    "section",
    "table",
]


class Html(str):
    """A fragment of markup that is already escaped (anything else is escaped on output)."""


@dataclass(frozen=True)
class Image:
    """A PNG figure of a section: saved as ``plots/<name>.png`` and embedded in the page."""

    name: str
    png: bytes
    alt: str
    caption: str = ""


Part = Html | Image


def figure(name: str, fig: Figure, alt: str, caption: str = "") -> Image:
    """A matplotlib figure as the page image ``name`` (``plots/<name>.png``)."""
    return Image(name=name, png=to_png(fig), alt=alt, caption=caption)


SectionFn = Callable[[Any], list[Part]]


@dataclass(frozen=True)
class SectionSpec:
    name: str  # the anchor id, unique on its page
    title: str
    render: SectionFn


SectionSource = Callable[[], Iterable[SectionSpec]]  # sections known only at render time


class Page:
    """A page's sections in order: a Registry whose entries are sections or section sources."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: Registry[SectionSpec | SectionSource] = Registry(
            f"section of report page {name!r}", error=ValueError
        )

    def section(self, name: str, *, title: str) -> Callable[[SectionFn], SectionFn]:
        """Register ``fn(data) -> parts`` as the next section, anchored at ``#name``."""
        return self.entries.register(name, lambda fn: SectionSpec(name, title, fn))

    def sections_from(self, name: str) -> Callable[[SectionSource], SectionSource]:
        """Register ``fn() -> sections``: the sections it gives when drawn come next."""

        def register(fn: SectionSource) -> SectionSource:
            self.entries.add(name, fn)
            return fn

        return register

    def sections(self) -> list[SectionSpec]:
        """Every section, sources expanded now; anchors must be unique on the page."""
        out: list[SectionSpec] = []
        for entry in self.entries.values():
            out += [entry] if isinstance(entry, SectionSpec) else list(entry())
        names = [s.name for s in out]
        if len(set(names)) != len(names):
            raise ValueError(f"report page {self.name!r}: two sections share an anchor in {names}")
        return out


PAGES: Registry[Page] = Registry("report page", error=ValueError)


def get_page(name: str) -> Page:
    """The page ``name``, created empty on first use."""
    return PAGES[name] if name in PAGES else PAGES.add(name, Page(name))


def section(page: str, name: str, *, title: str) -> Callable[[SectionFn], SectionFn]:
    """Register ``fn(data) -> parts`` as the next section of ``page`` (a new page on first use)."""
    return get_page(page).section(name, title=title)


def fmt(value: Any, *, limit: int = 400) -> str:
    """A cell: floats to 4 significant digits, dicts as ``k=v, ...``, lists in brackets."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        text = ", ".join(f"{k}={fmt(v, limit=limit)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(fmt(v, limit=limit) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def paragraph(text: str) -> Html:
    return Html(f"<p>{html.escape(text)}</p>")


def note(text: str) -> Html:
    """A muted line saying why a section is empty and how to fill it."""
    return Html(f'<p class="note">{html.escape(text)}</p>')


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, row_class: Sequence[str] = ()
) -> Html:
    """An HTML table; cells are escaped unless they are :class:`Html`."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f"<td>{_cell(c)}</td>" for c in row)
        cls = f' class="{html.escape(row_class[i])}"' if i < len(row_class) else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _cell(value: object) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, so the page lays out before decoding."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG: the IHDR chunk is missing")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _image_html(image: Image) -> str:
    width, height = _png_size(image.png)
    data = base64.b64encode(image.png).decode("ascii")
    caption = f"<figcaption>{html.escape(image.caption)}</figcaption>" if image.caption else ""
    return (
        f'<figure id="fig-{html.escape(image.name)}"><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(image.alt)}" width="{width}" height="{height}">{caption}</figure>'
    )


_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2329;
background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:1.2em 1.5em 3em}
header h1{margin:.2em 0 0;font-size:1.6em}header p{margin:.2em 0;color:#5b6570}
nav{margin:.8em 0 1.2em;font-size:.9em}nav a{margin-right:.9em;color:#2457a6;text-decoration:none}
section{background:#fff;border:1px solid #dfe3e8;border-radius:6px;padding:.6em 1.2em 1em;
margin:0 0 1.1em}
h2{font-size:1.2em;margin:.5em 0}
figure{margin:.6em 0}img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85em;color:#5b6570;margin-top:.2em}
table{border-collapse:collapse;font-size:.88em;margin:.4em 0}
th,td{border-bottom:1px solid #e6e9ed;padding:.25em .7em;text-align:left;vertical-align:top}
th{background:#f0f2f5}
.note{color:#6b7580;font-style:italic}
.finding{border-left:5px solid #8a94a0;padding:.3em .8em;margin:.6em 0;background:#fafbfc}
.finding p{margin:.25em 0}.finding .advice{color:#1f4d2b}
.sev-error{border-color:#c62828}.sev-warning{border-color:#e69500}.sev-info{border-color:#2457a6}
.badge{display:inline-block;font-size:.75em;font-weight:600;text-transform:uppercase;
padding:.05em .5em;border-radius:3px;color:#fff;background:#8a94a0}
.sev-error .badge{background:#c62828}.sev-warning .badge{background:#b87700}
.sev-info .badge{background:#2457a6}
tr.fail td{background:#fdecea}tr.warn td{background:#fff6e0}tr.inconclusive td{background:#eef1f5}
tr.diverged td{background:#fdecea}tr.pruned td{background:#eef1f5;color:#4b5560}
tr.failed td,tr.lost td{background:#f3f4f6;color:#6b7580}
tr.best td{font-weight:600;background:#fff8d6}
.wide{overflow-x:auto}
pre{font-size:.8em;background:#f3f4f6;padding:.5em;overflow:auto}
"""


def render_page(page: str, data: object, out_dir: Path, *, title: str, subtitle: str = "") -> Path:
    """Render every section of ``page`` for ``data`` into ``out_dir/report.html``; return it.

    Each image is also saved as ``out_dir/plots/<name>.png``. Both writes are atomic.
    """
    specs = PAGES.get_or_raise(page, where="render_page").sections()
    if not specs:
        raise ValueError(f"report page {page!r} has no sections")
    plots = out_dir / "plots"
    if plots.is_symlink() or (plots.exists() and not plots.is_dir()):  # checked before drawing
        raise ReportError(
            f"{plots}: is not a directory (a file or a link), so the page's figures are "
            "not saved there; move it away"
        )
    bodies = []
    images: list[Image] = []
    for spec in specs:
        parts = spec.render(data)
        inner = "".join(_image_html(p) if isinstance(p, Image) else str(p) for p in parts)
        images += [p for p in parts if isinstance(p, Image)]
        bodies.append(
            f'<section id="{html.escape(spec.name)}"><h2>{html.escape(spec.title)}</h2>'
            f"{inner}</section>"
        )
    nav = "".join(f'<a href="#{html.escape(s.name)}">{html.escape(s.title)}</a>' for s in specs)
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav>{''.join(bodies)}</main></body></html>\n"
    )
    names = [image.name for image in images]
    if len(set(names)) != len(names):
        raise ValueError(f"report page {page!r}: two images share a name in {names}")
    if images:
        plots.mkdir(exist_ok=True)
        for image in images:
            write_bytes_atomic(plots / f"{image.name}.png", image.png)
    target = out_dir / "report.html"
    write_bytes_atomic(target, doc.encode("utf-8"))
    return target
