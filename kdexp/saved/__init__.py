"""The saved student: what a finished run left behind, read back. Above the run layer, which never
imports it; the console scripts kdexp-eval and kdexp-export (kdexp.evaluation, kdexp.exporting) and
the Python API (kdexp.load_student, kdexp.evaluate, kdexp.export) call it.

    load.py      a run folder's models from their cards and weights, or a .ckpt alone (load_student)
    evaluate.py  a saved model on a test split: the run's table again, recorded under evaluations/
    export.py    ONNX / TorchScript / safetensors, checked against PyTorch before anything is written
"""
