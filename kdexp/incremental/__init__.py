"""Class-incremental learning with distillation: the protocol (``protocol``), the exemplar memory
(``memory``), the growing head (``head``) and the metrics (``metrics``). The loss terms are
kdexp.methods.incremental_losses, the run (a chain of steps on kdexp.runner.chain.run_steps) is
kdexp.runner.incremental, and the report's table kdexp.report.incremental."""
