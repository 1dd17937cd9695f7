"""The four commands end the same way: one paragraph ``<prog>: <kind>: <message>`` on stderr and
the error's exit status (bad input 2), through kdexp.errors; in this process, no CLI started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from kdexp import errors


def said(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_kdexp_eval_bad_input_is_a_configuration_error(tmp_path: Path, capsys) -> None:
    from kdexp.evaluation import main

    assert main([f"run={tmp_path / 'missing'}"]) == 2
    assert said(capsys).startswith("kdexp-eval: configuration error: ")
    assert main(["no-equals-sign"]) == 2
    assert said(capsys).startswith("kdexp-eval: configuration error: argument 'no-equals-sign' is not key=value")


def test_kdexp_export_bad_input_is_a_configuration_error(tmp_path: Path, capsys) -> None:
    from kdexp.exporting import main

    assert main(["a", "b"]) == 2
    assert said(capsys).startswith("kdexp-export: configuration error: give exactly one run folder")


def test_kdexp_export_check_failed_is_its_own_kind() -> None:
    from kdexp.saved.export import ExportCheckFailed

    err = ExportCheckFailed("differs")
    assert err.exit_code == 1 and errors.format_error(err, "kdexp-export") == "kdexp-export: check failed: differs"


def test_kdexp_report_bad_arguments_and_no_results(tmp_path: Path, capsys) -> None:
    from kdexp.report import main

    assert main(["--no-such-option", str(tmp_path)]) == 2
    assert said(capsys).startswith("kdexp-report: configuration error: unrecognized arguments: --no-such-option")
    assert main([str(tmp_path)]) == 1
    assert said(capsys) == f"kdexp-report: error: no results.json under {tmp_path}"
    (tmp_path / "file").write_text("")
    assert main([str(tmp_path), "--out", str(tmp_path / "file")]) == 2
    assert said(capsys).startswith("kdexp-report: configuration error: --out ")


def test_kdexp_override_hint_exits_2_in_the_same_format(capsys, monkeypatch) -> None:
    from kdexp.tools.config import with_override_hints

    monkeypatch.setattr(sys, "argv", ["kdexp", "ckpt_path=~/x.ckpt"])
    with pytest.raises(SystemExit) as stopped:
        with_override_hints(lambda: None)()
    assert stopped.value.code == 2
    assert said(capsys).startswith("kdexp: configuration error: ckpt_path='~/x.ckpt': ")


@pytest.mark.parametrize("prog", ["kdexp", "kdexp-report", "kdexp-eval", "kdexp-export"])
def test_one_format_and_exit_status_for_every_command(prog: str, capsys) -> None:
    assert errors.run_command(prog, lambda args: (_ for _ in ()).throw(ValueError("bad value")), []) == 2
    assert said(capsys) == f"{prog}: configuration error: bad value"
    assert errors.run_command(prog, lambda args: (_ for _ in ()).throw(errors.TrainingFailed("nan")), []) == 3
    assert said(capsys) == f"{prog}: training failed: nan"
    assert errors.format_error(errors.OutputError("full"), prog) == f"{prog}: cannot write output: full"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        errors.run_command(prog, lambda args: 1 / 0, [])


def test_sys_exit_only_in_errors() -> None:
    """One exit path: every ``sys.exit`` of kdexp is errors.exit_status."""
    found = subprocess.run(["grep", "-rln", r"sys\.exit\|SystemExit(", "kdexp", "--include=*.py"], cwd=REPO,
                           capture_output=True, text=True).stdout.split()
    assert found == ["kdexp/errors.py"]
