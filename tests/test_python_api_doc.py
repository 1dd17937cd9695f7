"""docs/python_api.md's example runs as written (in a temporary working directory)."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

pytest.importorskip("onnxruntime")


def test_python_api_example_runs(tmp_path, monkeypatch) -> None:
    text = (REPO / "docs" / "python_api.md").read_text()
    example = re.search(r"## Example.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # outputs/ and the teacher cache go under the working directory
    monkeypatch.delenv("KDEXP_CACHE_DIR", raising=False)
    exec(compile(example, "docs/python_api.md", "exec"), {})
    assert (tmp_path / "outputs" / "notebook" / "demo" / "export" / "student.onnx").is_file()
    assert (tmp_path / ".cache" / "kdexp").is_dir()
