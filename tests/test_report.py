import json
from pathlib import Path

import pytest

from kdexp.report import main, summarise, find_runs


def fake_run(folder: Path, method: str, seed: int, student_acc: float, temperature: float = 4) -> None:
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(f"method:\n  name: {method}\n  temperature: {temperature}\n")
    results = {
        "run": {"method": method, "data": "fashion_mnist", "teacher": "cnn_large", "student": "cnn_tiny", "seed": seed},
        "student": {"acc_top1": student_acc},
        "teacher": {"acc_top1": 0.93},
        "comparison": {"agreement_top1": 0.9},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_groups_by_everything_but_the_seed(tmp_path: Path) -> None:
    for seed, acc in enumerate((0.90, 0.91, 0.92)):
        fake_run(tmp_path / f"kd{seed}", "kd", seed, acc)
    fake_run(tmp_path / "kd_t2", "kd", 0, 0.5, temperature=2)
    rows = summarise(find_runs([tmp_path]))
    assert len(rows) == 2
    t4 = next(r for r in rows if "temperature=4" in r["options"])
    assert t4["n"] == 3 and t4["seeds"] == [0, 1, 2]
    assert t4["student acc mean"] == pytest.approx(0.91)
    assert t4["student acc std"] == pytest.approx(0.01)


def test_cli_writes_csv_and_fails_on_empty(tmp_path: Path) -> None:
    fake_run(tmp_path / "a", "vanilla", 0, 0.88)
    assert main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    assert "vanilla" in (tmp_path / "t.csv").read_text()
    assert main([str(tmp_path / "a" / ".hydra")]) == 1
