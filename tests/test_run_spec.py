"""A run reads its config once (kdexp.runner.spec.RunSpec): the method's options are parsed once,
and a resumed run's checkpoint is read once before Lightning loads it to continue."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import TINY_RUN


@pytest.fixture
def counted(monkeypatch) -> dict[str, int]:
    """Calls of the option parser by method (every way in: kdexp.methods and a module's own
    constructor) and of torch.load on a .ckpt file."""
    import kdexp.methods as methods
    import kdexp.methods.base as base
    import kdexp.tools.weights as weights

    calls: dict[str, Any] = {"parse": {}, "ckpt_reads": 0}
    parse, read = methods.parse_options, weights.torch.load

    def counting_parse(options_cls: type, values: dict[str, Any], method: str) -> Any:
        calls["parse"][method] = calls["parse"].get(method, 0) + 1
        return parse(options_cls, values, method)

    def counting_load(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls["ckpt_reads"] += str(path).endswith(".ckpt")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(methods, "parse_options", counting_parse)
    monkeypatch.setattr(base, "parse_options", counting_parse)
    monkeypatch.setattr(weights.torch, "load", counting_load)
    return calls


def test_a_run_parses_its_method_options_once(kdexp_run, shared_cache, counted) -> None:
    run = kdexp_run(*TINY_RUN, "method=kd", "method.temperature=2", cache_dir=shared_cache)
    assert run.error is None, run.message
    assert counted["parse"]["kd"] == 1  # (a teacher trained for it: vanilla's own run, parsed once too)
    assert run.results["run"]["hparams"]["method.temperature"] == 2.0  # the parsed value reaches every reader


def test_a_resumed_run_reads_its_checkpoint_once(kdexp_run, shared_cache, counted) -> None:
    first = kdexp_run(*TINY_RUN, "method=vanilla", "scheduler=none", cache_dir=shared_cache)
    assert first.error is None, first.message
    counted["ckpt_reads"], counted["parse"] = 0, {}
    again = kdexp_run(*TINY_RUN, "method=vanilla", "scheduler=none", "trainer.max_epochs=2", "ckpt_path=last",
                      run_dir=first.run_dir,
                      cache_dir=shared_cache)
    assert again.error is None, again.message
    assert again.results["run"]["resumed_from"]
    # kdexp reads it once (checked against the run's settings, its epoch noted); Lightning then
    # opens it itself to continue. Before RunSpec: 4 reads and 6 parses.
    assert counted["parse"] == {"vanilla": 1}
    assert counted["ckpt_reads"] == 1, counted
