"""A report as a list of blocks (headings, paragraphs, tables, figures), rendered twice: Markdown with its figures
as PNG files beside it, and one self-contained HTML file (figures embedded) that stays readable at 900 px."""
from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Doc:
    """Blocks rendered twice: Markdown (figures as files beside it) and HTML (figures embedded)."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, rows)))

    def figure(self, name: str, fig, caption: str) -> None:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.blocks.append(("figure", (name, buf.getvalue(), caption)))

    def to_markdown(self, figure_dir: str) -> str:
        out = [f"# {self.title}", ""]
        for kind, b in self.blocks:
            if kind == "h":
                out += ["#" * b[0] + " " + b[1], ""]
            elif kind == "p":
                out += [b, ""]
            elif kind == "table":
                headers, rows = b
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                name, _, caption = b
                out += [f"![{caption}]({figure_dir}/{name}.png)", "", f"*{caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        e = html.escape
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title><style>{CSS}</style></head><body>",
               f"<h1>{e(self.title)}</h1>"]
        for kind, b in self.blocks:
            if kind == "h":
                out.append(f"<h{b[0]}>{e(b[1])}</h{b[0]}>")
            elif kind == "p":
                out.append(f"<p>{e(b)}</p>")
            elif kind == "table":
                headers, rows = b
                # a header may break after an underscore ("auc_micro_global"): wide tables then fit 900 px
                out.append("<table><thead><tr>" + "".join(f"<th>{e(str(h)).replace('_', '_<wbr>')}</th>" for h in headers) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td{_cell_class(c)}>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows]
                out.append("</tbody></table>")
            elif kind == "figure":
                _, png, caption = b
                out.append(f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                           f"<figcaption>{e(caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def is_numeric(cell: Any) -> bool:
    """Numbers (and '.959', '0.9 ± 0.01', '—', '+.003') align right; words align left."""
    return bool(re.fullmatch(r"[-+.\d ±—,]+", str(cell)))


def _cell_class(cell: Any) -> str:
    """Numbers align right (class n); a cell with a run of 40 characters or more without a space (a path in a
    command) may break anywhere (class c), so that it does not widen the page; other text breaks between words."""
    if is_numeric(cell):
        return " class='n'"
    return " class='c'" if re.search(r"\S{40}", str(cell)) else ""


CSS = ("body{font-family:system-ui,sans-serif;max-width:1300px;margin:1em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}td.n{text-align:right}td.c{overflow-wrap:anywhere}"
       "th{background:#f2f2f2}figure{margin:1em 0}img{max-width:100%}"
       "figcaption{font-size:13px;color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:3px}")
