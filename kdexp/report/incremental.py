"""The class-incremental part of ``kdexp-report``: methods compared over seeds (average
incremental accuracy, final accuracy, average forgetting) and the accuracy-on-seen-classes curve.
Writes ``incremental.md`` and ``incremental_accuracy.png`` beside report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from kdexp.report.groups import finished_groups, mean_std, section_table
from kdexp.tools.files import write_atomic

METRICS = (  # (column, key in results.json's "incremental")
    ("avg incremental acc (%)", "average_incremental_accuracy"),
    ("final acc (%)", "final_accuracy"),
    ("avg forgetting (pts)", "average_forgetting"),
)


def incremental_rows(runs: list[dict[str, Any]], group_key) -> list[dict[str, Any]]:
    """One row per group of finished incremental runs (``group_key`` as kdexp-report's)."""
    rows = []
    for key, members in finished_groups(runs, "incremental", group_key):
        inc = [m["incremental"] for m in members]
        row: dict[str, Any] = {
            "data": key[0], "student": key[2], "method": key[3], "options": key[4], "setting": key[5],
            "n": len(members), "tasks": members[0]["run"].get("tasks"), "classifier": inc[0]["classifier"],
        }
        for _, name in METRICS:
            row[name] = mean_std([i[name] for i in inc if i.get(name) is not None])
        heads = [i["classifiers"]["head"]["final_accuracy"] for i in inc if "nme" in i.get("classifiers", {})]
        row["head_final_accuracy"] = mean_std(heads)
        curves = [i["accuracy_seen"] for i in inc]
        row["curve"] = [mean_std([c[s] for c in curves if s < len(c)]) for s in range(max(map(len, curves)))]
        rows.append(row)
    return rows


def _pct(pair: tuple[float | None, float | None]) -> str:
    mean, std = pair
    if mean is None:
        return "—"
    return f"{100 * mean:.2f} ± " + ("—" if std is None else f"{100 * std:.2f}")


def _cells(row: dict[str, Any]) -> list[str]:
    method = row["method"] + (f" ({row['classifier']})" if row["classifier"] != "head" else "")
    return [
        row["data"], row["student"], method, str(row["tasks"]), str(row["n"]),
        *[_pct(row[name]) for _, name in METRICS], _pct(row["head_final_accuracy"]),
    ]


HEADERS = ["data", "model", "method", "steps", "seeds", *[c for c, _ in METRICS], "final acc, own head (%)"]
CAPTION = (
    "Accuracy: on the test images of every class seen so far, one head, no task labels; mean ± std "
    "over seeds. Average incremental accuracy: the mean over steps. Forgetting: per earlier step, "
    "its classes' best accuracy minus their final one, averaged (Chaudhry et al. 2018). iCaRL "
    "classifies by nearest mean of exemplars (nme); its own head is the last column."
)


def incremental_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["**Class-incremental runs**", "", "| " + " | ".join(HEADERS) + " |"]
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADERS))) + "|")
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines + ["", CAPTION]) + "\n"


def write_curve_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy on all classes seen so far after each step, one line per row (± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for row in rows:
        steps = range(1, len(row["curve"]) + 1)
        means = [100 * m for m, _ in row["curve"]]
        stds = [100 * (s or 0) for _, s in row["curve"]]
        label = row["method"] + (f" ({row['classifier']})" if row["classifier"] != "head" else "")
        ax.errorbar(steps, means, yerr=stds, marker="o", capsize=3, label=f"{label}, n={row['n']}")
    ax.set_xticks(range(1, max(len(r["curve"]) for r in rows) + 1))
    ax.set_xlabel("after step")
    ax.set_ylabel("top-1 accuracy on all classes seen (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Class-incremental: " + ", ".join(sorted({r["data"] for r in rows})), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_incremental_report(runs: list[dict[str, Any]], out: Path, group_key, console: Console) -> list[Path]:
    """incremental.md and incremental_accuracy.png in ``out``, where any run is incremental."""
    rows = incremental_rows(runs, group_key)
    if not rows:
        return []
    write_atomic(out / "incremental.md", incremental_markdown(rows))
    console.print(section_table("Class-incremental runs (mean ± std over seeds)", CAPTION, HEADERS, 3, [_cells(row) for row in rows]))
    return [out / "incremental.md", write_curve_plot(rows, out / "incremental_accuracy.png")]
