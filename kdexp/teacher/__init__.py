"""The teacher room: everything about the run's teacher, in one place.

    provide.py      what the run layer asks for: the run's teacher (one TeacherRequest), its weights
                    recorded in the module, its stored outputs attached to the module
    route.py        a teacher the method trains itself (rocket), a teacher's route of anchors (RCO)
    cache.py        a teacher from its checkpoint, or trained once and cached (TeacherRequest)
    outputs.py      the teacher-output cache of a run (training logits per view), kept with the teacher
    test_logits.py  the teacher's test-set logits, computed once per teacher and test set
    store.py        one keyed store (identity -> key -> path; locked, atomic, verified on load) for
                    the cache entries, the route files, the test logits and the training logits
"""
