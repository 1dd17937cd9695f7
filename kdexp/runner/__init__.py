"""The run layer: a config in, a finished run's results out.

    entry.py       what the kdexp command does: job checks, failures and exit codes, sweep value
    experiment.py  what a config describes: a single run, a chain, or a method's own steps
    spec.py        the run's config read once: the method, its parsed options, its checkpoint
    build.py       config → checks, data, models (teacher provided), method module, trainers
    fit.py         fit (resuming where asked) and test; signals and NaN losses become clear errors
    assemble.py    results by role, profiles, comparison, HParams row → results.json, the table
    folder.py      the run folder: last.ckpt, weights, archived results, the failure record
    signals.py     SIGTERM / SIGINT and write errors around a whole run
    single.py      one run: prepare → module → fit and test → results
    chain.py       a chain of runs (Born-Again) reusing single runs and the same results code
    incremental.py a class-incremental run, a chain of steps (the step runner incremental_steps)
    kinds.py       the step runners a method may name (STEP_RUNNERS)
    performance.py the performance group: data options, channels_last, compile
    resume.py      what defines a run (its checkpoints' fingerprint), checked when a run resumes

No method is named here: what a method needs (a teacher, a chain, extra result fields) it
declares on its class (kdexp.methods.base.DistillationModule). The floors inside this package are
an import-linter contract in pyproject.toml ("run-layer"). Importing this package is light;
torch and Lightning load with the modules that need them. ``kdexp.run`` is not this package but the
Python API's function (kdexp.api.run).
"""
