"""The ``kdexp_run`` fixture itself: a run in this process leaves nothing behind for the next one
(torch's threads and deterministic switch, the environment, signal handlers, logging), so two
runs back to back train the same student."""

from __future__ import annotations

import logging
import os
import signal

import torch

from conftest import VANILLA_RUN

RUN = (*VANILLA_RUN, "trainer.max_epochs=1", "scheduler=none", "trainer.deterministic=true", "runtime.threads=1")


def state() -> tuple:
    """What a run could change for the tests after it."""
    return (
        torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), dict(os.environ),
        signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT),
        list(logging.getLogger().handlers), logging.getLogger().level,
    )


def test_back_to_back_runs_in_process_train_the_same_student_and_leave_no_state(kdexp_run) -> None:
    before = state()
    first = kdexp_run(*RUN)
    between = state()  # the environment may gain what torch and Lightning set when first imported
    second = kdexp_run(*RUN)
    assert first.exit_code == 0 and second.exit_code == 0, (first.message, second.message)
    assert first.results["student"]["acc_top1"] == second.results["student"]["acc_top1"]
    weights = [torch.load(o.run_dir / "student.pt", weights_only=True) for o in (first, second)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert state() == between
    assert between[:2] == before[:2] and between[3:] == before[3:]
    assert "PL_GLOBAL_SEED" not in os.environ or os.environ["PL_GLOBAL_SEED"] == before[2].get("PL_GLOBAL_SEED")


def test_a_refused_run_gives_the_clis_message_and_exit_status(kdexp_run) -> None:
    outcome = kdexp_run(*RUN, "trainer.max_epochs=0")
    assert outcome.results is None and outcome.exit_code == 2
    assert outcome.message.startswith("kdexp: configuration error: trainer.max_epochs=0 must be >= 1")
