"""Class-incremental learning with distillation: the protocol (``protocol``), the exemplar memory
(``memory``), the growing head (``head``), the loss terms (``losses``), the metrics (``metrics``)
and the run (``run``, a chain of steps on ``kdexp.runner.chain.run_steps``)."""
