"""Writes one list of report sections as markdown and as self-contained HTML (figures inlined).

A report is a list of `Section`s, each a heading and blocks: `Table`, `Notes` (paragraphs whose
only markup is **bold**), `Bullets`, `Figure`, `Gallery` (captioned images side by side) and
`Links`. evaluations.report decides what the sections hold; this module only how each block
looks in each format, so the two documents cannot drift apart.
"""

import base64
import html
import os
import re
from dataclasses import dataclass, field

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;font-size:14px;margin:0.5em 0}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}a{color:#0645ad;text-decoration:none}"
    "img{max-width:100%}.grids{display:flex;flex-wrap:wrap;gap:18px}.grids figure{margin:0}"
    ".grids img{image-rendering:pixelated}"
    "figcaption{font-size:13px;text-align:center}.note{font-size:13px;color:#555;max-width:1100px}"
    "td.failed{color:#b00;text-align:left}"
)


@dataclass
class Table:
    """Rows of (text, link) cells (a plain string is a cell without a link). In markdown only the
    first cell keeps its link when `first_link_only` (plain numbers); in HTML every cell does.
    A row of three cells under a wider header is a failed run: its third cell spans the rest."""
    header: list
    rows: list
    first_link_only: bool = True


@dataclass
class Notes:
    lines: list


@dataclass
class Bullets:
    lines: list


@dataclass
class Figure:
    path: str
    alt: str
    pixelated: bool = False  # small images enlarged: keep their pixels sharp in the browser


@dataclass
class Gallery:
    items: list  # [(caption, path)]


@dataclass
class Links:
    items: list  # [(what, path)]


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2


# --- markdown ---------------------------------------------------------------------------

def _cells(cells):
    return [c if isinstance(c, tuple) else (c, None) for c in cells]


def _md_cell(text, link):
    text = str(text).replace("|", "\\|")
    return f"[{text}]({link})" if link else text


def md_table(header, rows, first_link_only=True) -> list:
    """A markdown table of (text, link) cells: the run's link on its first cell only, plain numbers."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        lines.append("| " + " | ".join(_md_cell(t, link if i == 0 or not first_link_only else None)
                                       for i, (t, link) in enumerate(_cells(cells))) + " |")
    return lines


def _md_block(block, rel) -> list:
    if isinstance(block, Table):
        return md_table(block.header, block.rows, block.first_link_only) + [""]
    if isinstance(block, Notes):
        return list(block.lines) + [""]
    if isinstance(block, Bullets):
        return [f"- {line}" for line in block.lines] + [""]
    if isinstance(block, Figure):
        return [f"![{block.alt}]({rel(block.path)})", ""]
    if isinstance(block, Gallery):
        return [f"**{label}**\n\n![{label}]({rel(p)})\n" for label, p in block.items]
    if isinstance(block, Links):
        return [f"- [{rel(p)}]({rel(p)}): {what}" for what, p in block.items] + [""]
    raise TypeError(f"unknown report block {type(block).__name__}")


def markdown(title: str, sections: list, out: str) -> str:
    """The report as markdown; images are linked relative to `out`, the report's folder."""
    def rel(p):
        return os.path.relpath(p, out)
    lines = [f"# {title}", ""]
    for section in sections:
        lines += ["#" * section.level + " " + section.title, ""]
        for block in section.blocks:
            lines += _md_block(block, rel)
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------

def _html_cell(text, link):
    t = html.escape(str(text))
    return f'<a href="{html.escape(link)}">{t}</a>' if link else t


def inline(text) -> str:
    """Markdown whose only markup is **bold**, as HTML."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def _data_uri(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def html_table(header, rows) -> str:
    h = ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    for cells in rows:
        cells = _cells(cells)
        if len(cells) == 3 and len(header) > 3:  # a failed run: one wide cell
            h.append(f"<tr><td>{_html_cell(*cells[0])}</td><td>{_html_cell(*cells[1])}</td>"
                     f"<td class='failed' colspan='{len(header) - 2}'>{_html_cell(*cells[2])}</td></tr>")
        else:
            h.append("<tr>" + "".join(f"<td>{_html_cell(t, link)}</td>" for t, link in cells) + "</tr>")
    return "".join(h) + "</table>"


def _gallery(items) -> str:
    return "<div class='grids'>" + "".join(
        f"<figure><img src='{_data_uri(p)}' alt='{html.escape(label)}'>"
        f"<figcaption>{html.escape(label)}</figcaption></figure>" for label, p in items) + "</div>"


def _html_block(block, rel) -> str:
    if isinstance(block, Table):
        return html_table(block.header, block.rows)
    if isinstance(block, Notes):
        return "".join(f"<p class='note'>{inline(line)}</p>" for line in block.lines)
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(line)}</li>" for line in block.lines) + "</ul>"
    if isinstance(block, Figure):
        style = " style='image-rendering:pixelated'" if block.pixelated else ""
        return f"<img src='{_data_uri(block.path)}' alt='{html.escape(block.alt)}'{style}>"
    if isinstance(block, Gallery):
        return _gallery(block.items)
    if isinstance(block, Links):
        def link(p):
            return f"<a href='{html.escape(rel(p))}'>{html.escape(rel(p))}</a>"
        return "<ul>" + "".join(f"<li>{link(p)}: {html.escape(what)}</li>" for what, p in block.items) + "</ul>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def html_document(title: str, sections: list, out: str) -> str:
    """The report as one HTML file: every figure inlined as a data URI, links relative to `out`."""
    def rel(p):
        return os.path.relpath(p, out)
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        tag = f"h{section.level}"
        h.append(f"<{tag}>{html.escape(section.title)}</{tag}>" + "".join(_html_block(b, rel) for b in section.blocks))
    h.append("</body></html>")
    return "\n".join(h) + "\n"
