"""Spend reports as JSON (USD strings beside nano integers) and as CSV with an exact TOTAL row."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from pricing.money import format_usd
from service.reports.spend import SpendReport, SpendRow, Totals

# Spreadsheets run cells that start with these as formulas; model names come from clients.
_FORMULA_START = frozenset("=+-@\t\r")
_DIM_COLUMNS = {"team": "team_id", "key": "key_id", "model": "model", "base_model": "base_model", "kind": "kind"}
_SUM_COLUMNS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "trained_tokens", "tokens")


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _sums(item: SpendRow | Totals) -> dict[str, Any]:
    return dict(zip((*_SUM_COLUMNS, "cost_usd", "cost_nano"), _sum_cells(item), strict=True))


def _dims(report: SpendReport, row: SpendRow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dim in report.query.group_by:
        value = row.dims[dim]
        if dim == "team":
            out["team_id"] = value
            out["team_name"] = report.team_names.get(value)
        elif dim == "key":
            out["key_id"] = value or None
            out["key_name"] = report.key_names.get(value) if value else None
        elif dim == "base_model":
            out["base_model"] = value or None
        else:
            out[_DIM_COLUMNS[dim]] = value
    return out


def spend_json(report: SpendReport) -> dict[str, Any]:
    """The report as a JSON-ready dict: rows, exact totals and what was asked."""
    q = report.query
    bucketed = q.granularity != "none"
    return {
        "object": "farebox.spend_report",
        "source": report.source,
        "currency": "USD",
        "group_by": list(q.group_by),
        "granularity": q.granularity,
        "since": _iso(q.since),
        "until": _iso(q.until),
        "filters": {
            name: value
            for name, value in (
                ("team", q.team_id), ("key", q.key_id), ("model", q.model), ("base_model", q.base_model),
                ("kind", q.kind), ("status", q.status), ("endpoint", q.endpoint),
            )
            if value is not None
        },
        "rows": [
            ({"period_start": row.period_start} if bucketed else {}) | _dims(report, row) | _sums(row)
            for row in report.rows
        ],
        "totals": _sums(report.totals),
    }


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    if value is None:
        return ""
    if value.__class__ is str and value[:1] in _FORMULA_START:
        return "'" + value
    return value


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def _dim_cells(report: SpendReport, dim: str, value: str) -> list[Any]:
    if dim == "team":
        return [safe_cell(value), safe_cell(report.team_names.get(value))]
    if dim == "key":
        return [safe_cell(value), safe_cell(report.key_names.get(value) if value else None)]
    return [safe_cell(value)]


def _sum_cells(item: SpendRow | Totals) -> list[Any]:
    return [
        item.requests, item.prompt_tokens, item.cached_tokens, item.completion_tokens, item.trained_tokens,
        item.tokens, format_usd(item.cost_nano), item.cost_nano,
    ]


def spend_csv(report: SpendReport) -> str:
    """One line per group, then a TOTAL line whose sums are exactly the sums of the lines above."""
    q = report.query
    bucketed = q.granularity != "none"
    columns: list[str] = ["period_start"] if bucketed else []
    for dim in q.group_by:
        columns += {"team": ["team_id", "team_name"], "key": ["key_id", "key_name"]}.get(dim, [_DIM_COLUMNS[dim]])
    leading = len(columns)
    columns += [*_SUM_COLUMNS, "cost_usd", "cost_nano"]
    lines: list[list[Any]] = []
    for row in report.rows:
        # Only text from clients (names, models) can look like a formula; numbers are written as they are.
        cells: list[Any] = [row.period_start] if bucketed else []
        for dim in q.group_by:
            cells += _dim_cells(report, dim, row.dims[dim])
        lines.append(cells + _sum_cells(row))
    if leading:  # grouped: a TOTAL line (ungrouped, the one line is the total)
        lines.append(["TOTAL"] + [""] * (leading - 1) + _sum_cells(report.totals))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(lines)
    return buffer.getvalue()
