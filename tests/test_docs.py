"""Issue 17, finding 10: the documentation shows only options the commands have."""

import re

from conftest import REPO

from kdexp.report import main


def test_documented_kdexp_report_options_exist(capsys) -> None:
    try:
        main(["--help"])
    except SystemExit:
        pass
    known = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            if "kdexp-report" in line:
                used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line.split("kdexp-report", 1)[1]))
                assert used <= known, f"{doc.name}: {line.strip()} uses {sorted(used - known)}"


def test_the_readme_names_every_registered_method() -> None:
    from kdexp.methods import METHODS

    readme = (REPO / "README.md").read_text()
    missing = [name for name in METHODS.names() if f"`{name}`" not in readme]
    assert not missing, f"README.md's method list lacks {missing}"
