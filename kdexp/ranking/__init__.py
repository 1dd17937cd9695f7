"""The ranking room: recommendation as a task (users × items, HR/NDCG instead of top-1).

data (MovieLens-100K readers, a synthetic set) → protocol (implicit feedback, leave-one-out,
sampled negatives) → models (rankers that score (user, items)) → losses and methods (how a student
ranker learns, with or without its teacher) → loop (train, evaluate, time). The run layer reaches it
only through the ``ranking`` task's declaration (kdexp.tasks).
"""
