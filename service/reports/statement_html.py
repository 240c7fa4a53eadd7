"""The monthly statement as a self-contained HTML page that prints well (no template engine needed)."""

from __future__ import annotations

from html import escape

from pricing.money import format_usd
from service.reports.statement import Statement, StatementLine, rate_per_1k

_KIND_TITLES = {"inference": "Inference", "training": "Fine-tuning (training)"}

_CSS = """
@page { size: A4 landscape; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font: 10pt/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #111; margin: 24px; }
h1 { font-size: 16pt; margin: 0 0 4px; }
h2 { font-size: 12pt; margin: 18px 0 6px; }
.meta { color: #444; margin: 0 0 12px; }
.meta td { padding: 1px 12px 1px 0; }
table.lines { width: 100%; border-collapse: collapse; }
table.lines th, table.lines td { padding: 4px 6px; border-bottom: 1px solid #ccc; vertical-align: top; }
table.lines th { text-align: left; border-bottom: 2px solid #333; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.model { word-break: break-all; }
tr.subtotal td { font-weight: 600; border-top: 1px solid #333; }
tr.total td { font-weight: 700; border-top: 2px solid #111; border-bottom: 2px solid #111; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; }
.note { color: #555; font-size: 8.5pt; margin-top: 14px; }
@media print { body { margin: 0; } a { color: inherit; text-decoration: none; } }
"""

_HEAD = (
    ("Model", ""), ("Base model", ""), ("Requests", "num"), ("Prompt tokens", "num"),
    ("Cached tokens", "num"), ("Completion tokens", "num"), ("Trained tokens", "num"),
    ("Input $/1K", "num"), ("Cached $/1K", "num"), ("Output $/1K", "num"), ("Training $/1K", "num"),
    ("Cost (USD)", "num"),
)


def _cell(value: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(value))}</td>"


def _n(value: int) -> str:
    return f"{value:,}"


def _line_row(ln: StatementLine) -> str:
    cells = [
        _cell(ln.model, "model"), _cell(ln.base_model or "—", "model"), _cell(_n(ln.requests), "num"),
        _cell(_n(ln.prompt_tokens), "num"), _cell(_n(ln.cached_tokens), "num"),
        _cell(_n(ln.completion_tokens), "num"), _cell(_n(ln.trained_tokens), "num"),
        *(_cell(rate_per_1k(r) or "—", "num") for r in (
            ln.input_rate_nano, ln.cached_rate_nano, ln.output_rate_nano, ln.training_rate_nano)),
        _cell(format_usd(ln.cost_nano), "num"),
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _sum_row(label: str, lines: list[StatementLine], cls: str) -> str:
    def total(field: str) -> str:
        return _n(sum(getattr(ln, field) for ln in lines))

    cells = [
        f'<td colspan="2">{escape(label)}</td>', _cell(total("requests"), "num"),
        _cell(total("prompt_tokens"), "num"), _cell(total("cached_tokens"), "num"),
        _cell(total("completion_tokens"), "num"), _cell(total("trained_tokens"), "num"),
        '<td colspan="4"></td>', _cell(format_usd(sum(ln.cost_nano for ln in lines)), "num"),
    ]
    return f'<tr class="{cls}">' + "".join(cells) + "</tr>"


def statement_html(st: Statement) -> str:
    """The statement as one HTML document; every value from the ledger is escaped."""
    head = "".join(f'<th class="{cls}">{escape(title)}</th>' if cls else f"<th>{escape(title)}</th>" for title, cls in _HEAD)
    body: list[str] = []
    kinds = sorted({ln.kind for ln in st.lines}, key=lambda k: (k not in _KIND_TITLES, k))
    for kind in kinds:
        lines = [ln for ln in st.lines if ln.kind == kind]
        body.append(f'<tr><td colspan="{len(_HEAD)}"><h2>{escape(_KIND_TITLES.get(kind, kind))}</h2></td></tr>')
        body.extend(_line_row(ln) for ln in lines)
        body.append(_sum_row(f"Subtotal {_KIND_TITLES.get(kind, kind).lower()}", lines, "subtotal"))
    if not st.lines:
        body.append(f'<tr><td colspan="{len(_HEAD)}">No charges in this month.</td></tr>')
    body.append(_sum_row("Total", list(st.lines), "total"))
    title = f"Farebox statement {st.month} — {st.team_name}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<table class="meta">
<tr><td>Team</td><td>{escape(st.team_name)} ({escape(st.team_id)})</td></tr>
<tr><td>Period</td><td>{escape(st.period_start.strftime('%Y-%m-%d %H:%M'))} to {escape(st.period_end.strftime('%Y-%m-%d %H:%M'))} UTC (end excluded)</td></tr>
<tr><td>Generated</td><td>{escape(st.generated_at.strftime('%Y-%m-%d %H:%M:%S'))} UTC</td></tr>
<tr><td>Total</td><td><strong>USD {escape(format_usd(st.total_nano))}</strong></td></tr>
</table>
<table class="lines">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
<p class="note">Amounts are exact to the nano-dollar (1e-9 USD), summed from the Farebox ledger.
Rates are those charged, in USD per 1,000 tokens; a model appears once per set of rates it was charged at.</p>
</body>
</html>
"""
