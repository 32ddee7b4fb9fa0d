"""A report as a list of blocks, rendered to Markdown and to self-contained HTML (all text escaped).

>>> blocks = [Heading(1, "Run <a>"), Table(["Task", "Acc"], [["x|y", "0.5"]]), Code("<script>alert(1)</script>")]
>>> "<script>" in render_html(blocks, "t")
False
>>> print(render_markdown(blocks[:2]))
# Run &lt;a&gt;
<BLANKLINE>
| Task | Acc |
|---|---|
| x\\|y | 0.5 |
<BLANKLINE>
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from openrft.evaluate.results import markdown_table

__all__ = ["Block", "Code", "Facts", "Heading", "Image", "Para", "Table", "render_html", "render_markdown"]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """Plain text (no markup)."""

    text: str


@dataclass(frozen=True)
class Facts:
    """``key: value`` lines; values are shown as code (paths, names)."""

    items: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Image:
    src: str  # relative to the report
    alt: str


@dataclass(frozen=True)
class Code:
    """Preformatted text (questions, completions), shown verbatim."""

    text: str
    caption: str = ""


Block = Heading | Para | Facts | Table | Image | Code


# ---------------------------------------------------------------------------------------------- markdown
def _md_text(text: str) -> str:
    """Text with the characters Markdown viewers could read as HTML neutralised."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: str) -> str:
    return _md_text(str(text)).replace("|", "\\|").replace("\n", " ")


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


def _md_code_span(text: str) -> str:
    ticks = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text.replace(chr(10), ' ')}{pad}{ticks}"


def _md_fence(text: str) -> str:
    return "`" * max(3, _longest_backtick_run(text) + 1)


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown for ``blocks``: headings, tables (``|`` escaped), code fences longer than any backtick run inside."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + _md_text(b.text), ""]
        elif isinstance(b, Para):
            out += [_md_text(b.text), ""]
        elif isinstance(b, Facts):
            out += [f"- **{_md_text(k)}**: {_md_code_span(v)}" for k, v in b.items] + [""]
        elif isinstance(b, Table):
            out += [markdown_table([_md_cell(h) for h in b.header], [[_md_cell(c) for c in r] for r in b.rows]), ""]
        elif isinstance(b, Image):
            out += [f"![{_md_cell(b.alt)}]({b.src})", ""]
        elif isinstance(b, Code):
            fence = _md_fence(b.text)
            if b.caption:
                out += [f"*{_md_text(b.caption)}*", ""]
            out += [fence + "text", b.text, fence, ""]
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {b!r}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- html
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1b1f23; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f8fa; }
pre { background: #f6f8fa; padding: 0.7em; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
code { background: #f6f8fa; padding: 0 0.2em; }
.caption { font-style: italic; margin-bottom: 0.2em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML page (inline CSS; images by relative path); every text is escaped."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            level = min(max(b.level, 1), 6)
            body.append(f"<h{level}>{_e(b.text)}</h{level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_e(b.text)}</p>")
        elif isinstance(b, Facts):
            body.append("<ul>" + "".join(f"<li><b>{_e(k)}</b>: <code>{_e(v)}</code></li>" for k, v in b.items)
                        + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_e(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            body.append(f'<p><img src="{_e(b.src)}" alt="{_e(b.alt)}"></p>')
        elif isinstance(b, Code):
            cap = f'<div class="caption">{_e(b.caption)}</div>' if b.caption else ""
            body.append(f"{cap}<pre>{_e(b.text)}</pre>")
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {b!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
