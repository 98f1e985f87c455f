"""A tiny document model rendered to both HTML (self-contained, images embedded) and Markdown.

Text comes from spec names, labels and error messages, so both renderings escape it: HTML with
``html.escape``; Markdown likewise (Markdown passes raw HTML through to the page), plus the
characters that would end a table cell, a link text or a line."""

from __future__ import annotations

import base64
import html
from pathlib import Path


class Doc:
    """Headings, paragraphs, tables, images and code, rendered by ``html`` and ``markdown``."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str, cls: str = ""):
        self.blocks.append(("p", text, cls))

    def table(self, headers: list[str], rows: list[list]):
        self.blocks.append(("table", headers, rows))

    def img(self, path: Path, caption: str, rel: str):
        self.blocks.append(("img", Path(path), caption, rel))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def html(self, title: str) -> str:
        parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
                 "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:13px;max-width:100%}td,th{border:1px solid #ccc;"
                 "padding:3px 5px;text-align:right;overflow-wrap:anywhere}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
                 "figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:12px;color:#555;"
                 "max-width:640px}img{max-width:100%}.note{color:#666;font-size:13px}.verdict{font-size:16px;"
                 "background:#eef6ee;padding:0.6em;border-left:4px solid #4a4}.warn{background:#fff4e5;padding:0.5em;"
                 "border-left:4px solid #e90}.verdict.yes{background:#e6f4e6;border-color:#2a2}"
                 ".verdict.mixed{background:#fff4e0;border-color:#e90}.verdict.no{background:#fbe9e9;border-color:#c33}.verdict.inconclusive{background:#f0f0f0;border-color:#888}"
                 "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                cls = f" class='{b[2]}'" if b[2] else ""
                parts.append(f"<p{cls}>{html.escape(b[1])}</p>")
            elif b[0] == "code":
                parts.append(f"<pre>{html.escape(b[1])}</pre>")
            elif b[0] == "table":
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in b[1]) + "</tr>")
                for r in b[2]:
                    parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
                parts.append("</table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode()
                parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[2])}'>"
                             f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + _md(b[2]) + "\n")
            elif b[0] == "p":
                out.append(("> " if b[2].split(" ")[0] in ("verdict", "warn") else "") + _md(b[1]) + "\n")
            elif b[0] == "code":
                out.append("~~~\n" + b[1].replace("~~~", "~ ~ ~") + "\n~~~\n")
            elif b[0] == "table":
                out.append("| " + " | ".join(_md(h, cell=True) for h in b[1]) + " |")
                out.append("|" + "---|" * len(b[1]))
                for r in b[2]:
                    out.append("| " + " | ".join(_md(c, cell=True) for c in r) + " |")
                out.append("")
            elif b[0] == "img":
                alt = _md(b[2]).replace("[", "\\[").replace("]", "\\]")
                out.append(f"![{alt}]({b[3]})\n\n*{_md(b[2])}*\n")
        return "\n".join(out)


def _md(text, cell: bool = False) -> str:
    """``text`` safe in Markdown: HTML escaped (Markdown renders raw HTML), on one line; in a
    table cell ``|`` escaped too."""
    s = html.escape(" ".join(str(text).splitlines()), quote=False)
    return s.replace("|", "\\|") if cell else s
