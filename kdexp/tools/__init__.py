"""The tools floor (the lowest): what every other floor uses and that knows nothing of a run.

    config.py   the configs/ folder, the resolvers, job naming, composing a config (compose_context)
    files.py    the one atomic writer (every file kdexp writes), JSON, torch.save bytes, a file lock
    weights.py  reading torch files and the weights inside them, with reasons for unreadable ones
    trainer.py  the one Trainer factory (NaN guard, atomic checkpoints), the student's and a teacher's
"""
