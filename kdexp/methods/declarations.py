"""What a method declares to the run layer about itself, grouped: how it uses its teacher
(:class:`TeacherUse`) and whether its run is a chain of runs (:class:`Chain`). The run layer reads
these, never a method's name."""

from __future__ import annotations

from dataclasses import dataclass

PLAIN_CHAIN = "chain"
"""``Chain.runner`` for the plain chain of runs (kdexp.runner.chain.run_chain over ``chain_links``)."""


@dataclass(frozen=True)
class TeacherUse:
    """How a method uses its teacher.

    ``needed``: a teacher is provided (False for vanilla, dml, the class-incremental methods; see
    also ``requires_teacher(hparams)``). ``trained_with_student``: the teacher trains together with
    the student (rocket, the joint methods): the run layer builds it fresh and trainable instead of
    loading, caching and freezing one, saves it as teacher.pt, and ``kd_weight > 0`` then needs no
    given teacher. ``logits_only``: the frozen teacher is used only through ``teacher_logits``, so
    its outputs may come from a kdexp.teacher.outputs cache."""

    needed: bool = True
    trained_with_student: bool = False
    logits_only: bool = False


@dataclass(frozen=True)
class Chain:
    """A run that is a chain of runs, each taught by the one before.

    ``runner``: :data:`PLAIN_CHAIN` (kdexp.runner.chain, the links from ``chain_links``) or the
    name of a runner in kdexp.runner.kinds.STEP_RUNNERS that runs the whole chain of steps itself
    (class-incremental: ``incremental_steps``). ``step``: what one run is called in results.json
    ("generation"); ``folder``: its sub-folder prefix (<run>/gen<k>/); ``ensemble``: the runs'
    students share one architecture, so their ensemble is reported."""

    runner: str = PLAIN_CHAIN
    step: str = "step"
    folder: str = "step"
    ensemble: bool = False

    @property
    def plain(self) -> bool:
        """Run by kdexp.runner.chain over ``chain_links``, not by a step runner of its own."""
        return self.runner == PLAIN_CHAIN


FEDERATED_RUNNER = "federated_rounds"
"""``Federated.runner``: kdexp.runner.federated, the rounds of clients and a server."""


@dataclass(frozen=True)
class Federated:
    """A method whose run is a federated experiment (kdexp.federated): clients train on their own
    shard of the data, a server combines what they send, for rounds.

    ``algorithm``: the key of its server and client steps in kdexp.federated.algorithms.ALGORITHMS.
    ``shares``: what crosses the network, in words ("weights", "logits on public data", "per-class
    logits"). ``public_data``: it needs the unlabelled public set (``federated.public_size`` > 0).
    ``global_model``: the server holds one model (its accuracy is the run's); otherwise each
    client keeps its own and the run's accuracy is the clients' mean. ``heterogeneous``: clients
    may have different architectures (``federated.client_models``). ``runner``: the step runner
    (kdexp.runner.kinds.STEP_RUNNERS) that runs it."""

    algorithm: str
    shares: str
    public_data: bool = False
    global_model: bool = True
    heterogeneous: bool = False
    runner: str = FEDERATED_RUNNER
