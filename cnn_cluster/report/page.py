"""Rendering of the report page: sections of plain blocks, as HTML and as Markdown.

sections.py builds the sections (paragraphs, tables, images, lists) once; this renders them
twice: ``index.html`` is self-contained (figures inlined as data URIs, no network needed,
readable on a phone and in print); ``README.md`` links the PNGs beside it, for a git repository.
Nothing here reads a run folder.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..run.io import write_text


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    mark: Optional[int] = None  # row to highlight (the best trial)
    id: str = ""


@dataclass
class Image:
    path: Path
    alt: str


@dataclass
class Html:
    """Interactive HTML for index.html only (self-contained, no network); README.md gets ``text``."""
    html: str
    text: str


Block = Union[str, Table, Image, list, Html]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def write_page(out: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """report/index.html (self-contained) and report/README.md."""
    index, readme = out / "index.html", out / "README.md"
    write_text(index, to_html(title, sections))
    write_text(readme, to_markdown(title, sections, out))
    return index, readme


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:0 auto;padding:1rem;
color:#1d2330;line-height:1.45}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.25rem;border-bottom:2px solid #e3e7ef;padding-bottom:.2rem;
margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #d5dae3;padding:.3rem .55rem;text-align:left;white-space:nowrap}th{background:#f2f4f8}
tr.best td{background:#fff4cc;font-weight:600}img{max-width:100%;height:auto;border:1px solid #e3e7ef;margin:.4rem 0}
nav a{margin-right:.8rem;font-size:.9rem}li{margin:.25rem 0}
@media print{nav{display:none}h2{break-after:avoid}img,table{break-inside:avoid}body{max-width:none}}
"""


def to_html(title: str, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    body = "".join(f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>{"".join(_html_block(b) for b in s.blocks)}'
                   "</section>" for i, s in enumerate(sections))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>\n")


def _html_block(b: Block) -> str:
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns) if any(b.columns) else ""
        rows = "".join(f"<tr{' class=best' if i == b.mark else ''}>" + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                       + "</tr>" for i, r in enumerate(b.rows))
        ident = f" id='{b.id}'" if b.id else ""
        return f"<table{ident}>{'<thead><tr>' + head + '</tr></thead>' if head else ''}<tbody>{rows}</tbody></table>"
    if isinstance(b, Image):
        data = base64.b64encode(Path(b.path).read_bytes()).decode()
        return f"<img alt='{html.escape(b.alt)}' src='data:image/png;base64,{data}'>"
    if isinstance(b, Html):
        return b.html
    if isinstance(b, list):
        return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b) + "</ul>"
    text = html.escape(b)
    if text.startswith("**") and text.endswith("**"):
        return f"<p><strong>{text[2:-2]}</strong></p>"
    return f"<p>{text}</p>"


def to_markdown(title: str, sections: list[Section], base: Path) -> str:
    parts = [f"# {title}\n"]
    for s in sections:
        parts.append(f"\n## {s.title}\n")
        for b in s.blocks:
            parts.append(_md_block(b, base))
    return "\n".join(parts) + "\n"


def _md_block(b: Block, base: Path) -> str:
    if isinstance(b, Table):
        cols = [c or " " for c in b.columns]
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        for i, r in enumerate(b.rows):
            cells = [f"**{c}**" if i == b.mark else c for c in r]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"
    if isinstance(b, Image):
        try:
            rel = Path(b.path).relative_to(base)
        except ValueError:
            rel = Path(b.path)
        return f"![{b.alt}]({rel.as_posix()})\n"
    if isinstance(b, list):
        return "\n".join(f"- {x}" for x in b) + "\n"
    if isinstance(b, Html):
        return b.text + "\n"
    return b + "\n"
