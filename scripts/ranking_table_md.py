"""The compact table of docs/ranking.md from a folder of task=ranking runs (scripts/ranking_table.sh):
per (teacher → student, method), mean ± std over seeds of the student's test HR@10 and NDCG@10, its
difference to the student alone, the teacher's numbers, and the teacher/student size and latency ratios.

    python scripts/ranking_table_md.py outputs/ranking_table
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    spread = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{100 * statistics.fmean(values):.2f}{spread}"


def main(root: str) -> None:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for path in sorted(Path(root).rglob("results.json")):
        results = json.loads(path.read_text())
        run = results["run"]
        if run.get("status") == "complete" and run.get("task") == "ranking":
            pair = f"{results['run'].get('teacher') or '—'} → {run['student']}"
            groups[(run["student"], run["method"], pair)].append(results)
    alone = {student: [r["student"]["hr_at_10"] for r in runs]
             for (student, method, _), runs in groups.items() if method == "vanilla"}
    print("| student ← teacher | method | seeds | student HR@10 (%) | student NDCG@10 (%) | Δ HR@10 vs alone (pts) "
          "| teacher HR@10 (%) | teacher NDCG@10 (%) | params teacher/student | latency 100 cand. teacher/student |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (student, method, pair), runs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "mf", kv[0][1] != "vanilla", kv[0][1])):
        hr = [r["student"]["hr_at_10"] for r in runs]
        ndcg = [r["student"]["ndcg_at_10"] for r in runs]
        base = alone.get(student)
        delta = f"{100 * (statistics.fmean(hr) - statistics.fmean(base)):+.2f}" if base and method != "vanilla" else "—"
        teachers = [r["teacher"] for r in runs if r.get("teacher")]
        cmp = [r.get("comparison") or {} for r in runs]
        params = [c["compression_params"] for c in cmp if c.get("compression_params")]
        latency = [c["speedup_latency_b1"] for c in cmp if c.get("speedup_latency_b1")]
        print(f"| {pair if method != 'vanilla' else student + ' alone'} | {method} | {len(runs)} | {mean_std(hr)} | {mean_std(ndcg)} | {delta} "
              f"| {mean_std([t['hr_at_10'] for t in teachers])} | {mean_std([t['ndcg_at_10'] for t in teachers])} "
              f"| {f'{statistics.median(params):.1f}×' if params else '—'} | {f'{statistics.median(latency):.2f}×' if latency else '—'} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/ranking_table")
