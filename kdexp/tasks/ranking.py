"""``task=ranking``: recommendation (users × items), the ranking room's loop (kdexp.ranking) run by
the run layer's own-loop runner."""

from __future__ import annotations

from typing import Any, Callable

from kdexp.tasks import OwnLoop, Task, register_task


class RankingLoop(OwnLoop):
    """Rankers on an interaction data set; judged by HR@10 against 99 sampled negatives."""

    def __init__(self, k: int = 10, ks: tuple[int, ...] = (3, 5, 10)) -> None:
        self.k, self.ks = k, ks

    def _configure(self, data_cfg: dict[str, Any]) -> None:
        self.k = int(data_cfg.get("hr_k", 10))
        self.ks = tuple(int(x) for x in data_cfg.get("full_ks", (3, 5, 10)))

    @property
    def primary(self) -> str:  # type: ignore[override]
        return f"hr_at_{self.k}"

    @property
    def rows(self) -> tuple[tuple[str, str, str, str | None], ...]:  # type: ignore[override]
        k = self.k
        return (
            (f"HR@{k} (vs 99 sampled)", f"hr_at_{k}", "pct", f"hr_at_{k}_gap"),
            (f"NDCG@{k} (vs 99 sampled)", f"ndcg_at_{k}", "pct", f"ndcg_at_{k}_gap"),
            (f"HR@{k}, best-val. epoch", f"hr_at_{k}_best_epoch", "pct", None),
            *((f"P@{j} (full list)", f"precision_at_{j}", "pct", None) for j in self.ks),
            *((f"NDCG@{j} (full list)", f"ndcg_full_at_{j}", "pct", None) for j in self.ks),
            ("MAP (full list)", "map", "pct", None),
            ("parameters", "params", "int", "compression_params"),
            ("size (MB)", "size_mb", "f", "compression_size"),
            ("100 candidates b=1 (ms, median)", "latency_ms_b1", "ms", "speedup_latency_b1"),
            ("full item list b=1 (ms)", "latency_ms_full_list", "ms", "speedup_full_list"),
            ("per user, batched (ms)", "latency_ms_per_user_batched", "ms", None),
            ("throughput (users/s)", "throughput_users_per_s", "g", "speedup_throughput_users"),
        )

    @property
    def logged(self) -> tuple[str, ...]:  # type: ignore[override]
        k = self.k
        return (f"final/student_hr_at_{k}", f"final/teacher_hr_at_{k}", f"final/student_ndcg_at_{k}",
                f"final/teacher_ndcg_at_{k}", f"final/hr_at_{k}_gap", "final/speedup_latency_b1",
                "final/compression_params", "final/student_params", f"final/student_hr_at_{k}_best_epoch")

    def result_fields(self) -> set[str]:
        metrics = {f"hr_at_{self.k}", f"ndcg_at_{self.k}", "map", *(f"precision_at_{j}" for j in self.ks),
                   *(f"ndcg_full_at_{j}" for j in self.ks)}
        return metrics | {f"val_{self.primary}", f"val_ndcg_at_{self.k}", f"{self.primary}_best_epoch"}

    def prepare(self, data_cfg: dict[str, Any], seed: int) -> Any:
        from kdexp.ranking.loop import load_data

        self._configure(data_cfg)
        self.batch_size = int(data_cfg.get("batch_size", 1024))
        return load_data(data_cfg, seed)

    def build_model(self, role: str, model_cfg: dict[str, Any], data: Any) -> Any:
        from kdexp.ranking.loop import build_model

        return build_model(role, model_cfg, data)

    def check(self, method: Any, student: Any, teacher: Any, data: Any) -> list[str]:
        return method.cls.check_models(method.options, student, teacher, data)

    def make_method(self, method: Any, student: Any, teacher: Any, data: Any) -> Any:
        return method.cls(method.options, student, teacher, data)

    def _train(self, module: Any, data: Any, run: dict[str, Any], keep: Any,
               on_epoch: Callable[[int, dict[str, float]], None]) -> dict[str, Any]:
        from kdexp.ranking.loop import evaluate, train

        params = [*keep.parameters(), *module.parameters()]
        if module.teacher_use.trained_with_student:
            params += list(module.teacher.parameters())
        return train(module, params, data, run, lambda: evaluate(keep, data, "val", self.k, self.ks, full=False),
                     on_epoch, lambda: keep, f"hr_at_{self.k}")

    def train_teacher(self, teacher: Any, data: Any, recipe: dict[str, Any], seed: int,
                      on_epoch: Callable[[int, dict[str, float]], None]) -> dict[str, Any]:
        """The teacher alone (vanilla, the recipe's loss and negatives) for the recipe's epochs; its
        last epoch is kept (so the cached teacher does not depend on any run's validation draw)."""
        from kdexp.ranking.methods import choose_method

        own = {k: recipe[k] for k in ("loss", "negatives") if k in recipe}
        method = choose_method({"name": "vanilla", **own})
        module = method.cls(method.options, teacher, None, data)
        run = {"epochs": recipe.get("max_epochs", 20), "batch_size": recipe.get("batch_size", self.batch_size),
               "optimizer": recipe["optimizer"], "scheduler": recipe.get("scheduler") or {"name": "none"}, "seed": seed}
        return self._train(module, data, run, teacher, on_epoch)

    def fit(self, module: Any, data: Any, run: dict[str, Any],
            on_epoch: Callable[[int, dict[str, float]], None]) -> dict[str, Any]:
        return self._train(module, data, run, module.student, on_epoch)

    def evaluate(self, model: Any, data: Any, split: str, full: bool = True) -> dict[str, float]:
        from kdexp.ranking.loop import evaluate

        return evaluate(model, data, split, self.k, self.ks, full)

    def profile(self, model: Any, data: Any, profile_cfg: dict[str, Any]) -> dict[str, Any]:
        from kdexp.ranking.loop import profile

        return profile(model, data, profile_cfg)

    def comparison(self, teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float | None]:
        def ratio(a: Any, b: Any) -> float | None:
            return None if a is None or not b else a / b

        def gap(field: str) -> float | None:
            t, s = teacher.get(field), student.get(field)
            return None if t is None or s is None else t - s

        return {
            f"hr_at_{self.k}_gap": gap(f"hr_at_{self.k}"),
            f"ndcg_at_{self.k}_gap": gap(f"ndcg_at_{self.k}"),
            "speedup_full_list": ratio(teacher.get("latency_ms_full_list"), student.get("latency_ms_full_list")),
            "speedup_throughput_users": ratio(student.get("throughput_users_per_s"), teacher.get("throughput_users_per_s")),
        }


def _choose_method(cfg: dict[str, Any]) -> Any:
    from kdexp.ranking.methods import choose_method

    return choose_method(cfg)


register_task(Task("ranking", choose_method=_choose_method, runner="own_loop", loop=RankingLoop()))
