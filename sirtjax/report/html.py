"""A single-file HTML report from plain data: sections of key-value lists, tables, figures and notes.

The page is self-contained: images are embedded as base64 PNG ``data:`` URIs, the CSS is inline,
there is no script and no external asset, so the file can be mailed, archived or opened offline.
Every text is HTML-escaped. :func:`render_report` is a pure function of its arguments (the
software version is passed in, defaulting to ``sirtjax.__version__``); :func:`write_report` writes
atomically.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
from collections.abc import Sequence
from pathlib import Path

from sirtjax.outputs import atomic_path

MISSING = "–"


@dataclasses.dataclass(frozen=True)
class KeyValues:
    """A two-column list of (label, value) pairs; values already formatted as text."""

    items: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Table:
    """A table: header texts and rows of cell texts (None shows as a dash); first column left-aligned."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str | None, ...], ...]
    caption: str = ""
    groups: tuple[tuple[str, int], ...] = ()  # optional header row above: (text, number of columns spanned)
    numeric: bool = True  # right-align the columns after the first (False: all left-aligned)


@dataclasses.dataclass(frozen=True)
class FigurePng:
    """An embedded PNG figure with a caption."""

    png: bytes
    caption: str = ""


@dataclasses.dataclass(frozen=True)
class Note:
    """A paragraph of explanatory text."""

    text: str


Block = KeyValues | Table | FigurePng | Note


@dataclasses.dataclass(frozen=True)
class Section:
    """A titled part of the report holding blocks in order."""

    title: str
    blocks: tuple[Block, ...]


_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#d9dee4; --head:#0b3d5c; --accent:#1769aa; --zebra:#f5f7f9;
        --warn-bg:#fff4e5; --warn-line:#f0a030; }
* { box-sizing: border-box; }
body { margin:0; background:#eef1f4; color:var(--ink);
       font: 14px/1.45 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", sans-serif; }
header { background:var(--head); color:white; padding:18px 32px; }
header h1 { margin:0; font-size:22px; font-weight:600; letter-spacing:.2px; }
header .sub { margin-top:4px; color:#c8d8e4; font-size:13px; }
main { max-width:1200px; margin:0 auto; padding:20px 24px 8px; }
section { background:white; border:1px solid var(--line); border-radius:6px; padding:14px 20px 16px;
          margin-bottom:18px; }
h2 { margin:0 0 10px; font-size:16px; color:var(--head); border-bottom:2px solid var(--accent);
     padding-bottom:6px; }
table { border-collapse:collapse; margin:6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { padding:4px 12px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:#e8eef3; color:var(--head); font-weight:600; font-size:13px; }
th:first-child, td:first-child, table.text th, table.text td { text-align:left; }
th.group { text-align:center; border-left:2px solid white; }
tbody tr:nth-child(even) { background:var(--zebra); }
table.kv td:first-child { color:var(--muted); padding-left:0; }
table.kv td { text-align:left; border-bottom:1px dotted var(--line); }
caption { caption-side:bottom; text-align:left; color:var(--muted); font-size:12px; padding-top:4px; }
figure { margin:8px 0 12px; }
figure img { max-width:100%; height:auto; display:block; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
p.note { color:var(--muted); margin:6px 0; }
.warnings { background:var(--warn-bg); border:1px solid var(--warn-line); border-left:6px solid var(--warn-line);
            border-radius:6px; padding:10px 16px; margin-bottom:18px; }
.warnings h2 { border:none; color:#8a4b00; margin-bottom:4px; padding:0; }
.warnings ul { margin:0; padding-left:20px; }
.ok { color:#2d6a2d; }
.scroll { overflow-x:auto; }
footer { max-width:1200px; margin:0 auto; padding:4px 24px 24px; color:var(--muted); font-size:12px; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _block(block: Block) -> str:
    if isinstance(block, KeyValues):
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in block.items)
        return f'<table class="kv"><tbody>{rows}</tbody></table>'
    if isinstance(block, Table):
        head = "".join(f"<th>{_e(h)}</th>" for h in block.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{_e(MISSING if c is None else c)}</td>" for c in row) + "</tr>" for row in block.rows
        )
        caption = f"<caption>{_e(block.caption)}</caption>" if block.caption else ""
        groups = ""
        if block.groups:
            groups = "<tr>" + "".join(f'<th colspan="{int(n)}" class="group">{_e(t)}</th>' for t, n in block.groups) + "</tr>"
        cls = "" if block.numeric else ' class="text"'
        return (f'<div class="scroll"><table{cls}>{caption}<thead>{groups}<tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>")
    if isinstance(block, FigurePng):
        data = base64.b64encode(block.png).decode("ascii")
        caption = f"<figcaption>{_e(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img alt="{_e(block.caption or "figure")}" src="data:image/png;base64,{data}">{caption}</figure>'
    if isinstance(block, Note):
        return f'<p class="note">{_e(block.text)}</p>'
    raise TypeError(f"not a report block: {type(block).__name__}")


def _warning_text(w) -> str:
    if isinstance(w, str):
        return w
    if isinstance(w, dict):
        return w.get("message") or w.get("code") or str(w)
    return getattr(w, "message", str(w))


def render_report(
    title: str,
    sections: Sequence[Section],
    *,
    subtitle: str = "",
    warnings: Sequence = (),
    version: str | None = None,
    created: datetime.datetime | None = None,
) -> str:
    """The report as one self-contained HTML string (UTF-8 text).

    Args:
      title: page title (e.g. "SIRT plan - patient-042").
      sections: in display order.
      subtitle: a line under the title (study, date of the images, ...).
      warnings: strings, dicts with "message" (as ``ResultWarning.to_dict()`` gives) or objects
        with a ``message``; shown in a highlighted box at the top, or "No warnings." when empty.
      version: software version for the footer; default ``sirtjax.__version__``.
      created: timestamp for the footer; default now (pass one for reproducible bytes).
    """
    if version is None:
        from sirtjax import __version__ as version
    created = created or datetime.datetime.now().astimezone()
    if warnings:
        items = "".join(f"<li>{_e(_warning_text(w))}</li>" for w in warnings)
        warn = f'<div class="warnings"><h2>Warnings ({len(warnings)})</h2><ul>{items}</ul></div>'
    else:
        warn = '<section><p class="ok">No warnings.</p></section>'
    body = "".join(
        f"<section><h2>{_e(s.title)}</h2>{''.join(_block(b) for b in s.blocks)}</section>" for s in sections
    )
    sub = f'<div class="sub">{_e(subtitle)}</div>' if subtitle else ""
    stamp = created.strftime("%Y-%m-%d %H:%M %Z").strip()
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>{sub}</header>"
        f"<main>{warn}{body}</main>"
        f"<footer>Generated by sirtjax {_e(version)} on {_e(stamp)}. For research use; "
        "not a medical device. Check every number against your clinical system.</footer>"
        "</body></html>\n"
    )


def write_report(html_text: str, path: str | Path) -> Path:
    """Write the HTML text to path atomically (temporary sibling file, then rename); returns path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p, mode=0o644) as tmp:  # a report is meant to be shared
        tmp.write_text(html_text, encoding="utf-8")
    return p
