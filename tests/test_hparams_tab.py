"""TensorBoard's HParams tab draws the vanilla baseline (issue: the parallel-coordinates view
silently dropped it: vanilla had no method.kd_weight and no teacher metrics)."""

from typing import Any

from tests.conftest import compose_config


def _default_columns(columns: list[tuple[str, list[Any], bool]], metrics: list[str]) -> tuple[list[str], list[str]]:
    """What TensorBoard 2.x shows by default (tf-hparams-query-pane): the hyperparameters sorted
    differing-first (a stable sort), the first 5 of them, and the first 5 metrics."""
    ordered = sorted(columns, key=lambda c: not c[2])
    return [name for name, _, _ in ordered[:5]], metrics[:5]


def test_a_vanilla_run_logs_its_effective_loss_weights() -> None:
    from kdexp.runner.assemble import hparams_row
    from kdexp.runner.spec import RunSpec

    def row_of(override: str, teacher: str | None) -> dict[str, Any]:
        cfg = compose_config(override)
        return hparams_row(cfg, RunSpec.read(cfg).method, teacher)

    row = row_of("method=vanilla", None)
    assert (row["method"], row["method.ce_weight"], row["method.kd_weight"]) == ("vanilla", 1.0, 0.0)
    kd = row_of("method=kd", "cnn_large")
    assert (kd["method.ce_weight"], kd["method.kd_weight"]) == (0.1, 0.9)  # kd.yaml's, not the defaults
    assert kd.keys() >= row.keys()


def test_every_run_has_a_value_in_every_column_shown_by_default() -> None:
    from kdexp.report import hparams_experiment
    from kdexp.results import hparams_metrics

    def run(method: str, seed: int, extra: dict[str, Any], teacher: bool) -> dict[str, Any]:
        hparams = {"method": method, "seed": seed, "teacher": "cnn_large" if teacher else "none", "student": "cnn_tiny",
                   "method.ce_weight": 1.0 if method == "vanilla" else 0.1,
                   "method.kd_weight": 0.0 if method == "vanilla" else 0.9, **extra}
        results = {"run": {"hparams": hparams}, "student": {"acc_top1": 0.9, "acc_top1_best_epoch": 0.9,
                   "params": 6274, "macs": 5e5, "latency_ms_b1": 0.2}}
        if teacher:
            results["teacher"] = {"acc_top1": 0.93}
            results["comparison"] = {"speedup_latency_b1": 5.0, "agreement_top1": 0.9, "acc_gap_top1": 0.03,
                                     "compression_params": 40.0}
        results["_command_line"] = {"method": method, "seed": str(seed)}
        return results

    runs = [run(m, s, {"method.at_weight": 1000.0} if m == "at" else {}, m != "vanilla")
            for m in ("vanilla", "kd", "at") for s in (0, 1)]
    columns, metrics = hparams_experiment(runs)
    shown, shown_metrics = _default_columns(columns, metrics)
    assert shown[:2] == ["method", "seed"] and "method.kd_weight" in shown
    assert "method.at_weight" not in shown  # only the at runs have it
    assert metrics[0] == "final/student_acc_top1" and "final/teacher_acc_top1" in metrics
    for results in runs:
        assert set(shown) <= set(results["run"]["hparams"]), results["run"]["hparams"]["method"]
        assert set(shown_metrics) <= set(hparams_metrics(results)), results["run"]["hparams"]["method"]
    # Without a vanilla run, the teacher's columns lead as before.
    _, taught = hparams_experiment(runs[2:])
    assert taught[:4] == ["final/student_acc_top1", "final/teacher_acc_top1", "final/agreement_top1",
                          "final/speedup_latency_b1"]
