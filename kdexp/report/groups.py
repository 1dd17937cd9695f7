"""What the report's sections of their own (class-incremental, federated) share: finished runs that
carry a section, grouped as kdexp-report groups them, and a mean with its spread over seeds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rich.table import Table


def finished_groups(
    runs: list[dict[str, Any]], section: str, group_key: Callable[[dict[str, Any]], tuple]
) -> list[tuple[tuple, list[dict[str, Any]]]]:
    """(key, runs) for the finished runs whose results.json has ``section``, by ``group_key``, sorted."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for results in runs:
        if section in results and results.get("run", {}).get("complete"):
            groups[group_key(results)].append(results)
    return sorted(groups.items())


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, std) over seeds; (None, None) for no values, std None for one (no spread)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def section_table(title: str, caption: str, headers: list[str], text_columns: int, rows: list[list[str]]) -> Table:
    """A section's console table: its first ``text_columns`` columns left-aligned, the numbers right."""
    table = Table(title=title, caption=caption)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < text_columns else "right")
    for row in rows:
        table.add_row(*row)
    return table
