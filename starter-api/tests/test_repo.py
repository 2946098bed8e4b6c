"""The repository keeps its promises: CI runs the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands():
    return re.findall(r"^    (\(cd starter-api && .+\))$", (ROOT / "README.md").read_text(), re.M)


def test_ci_runs_the_readme_test_command():
    commands = _readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_run_command_uses_the_seed_steps():
    run_command = next(c for c in _readme_commands() if "manage.py run" in c)
    for step in ("manage.py createdb", "manage.py loaddata", "manage.py adduser admin admin"):
        assert step in run_command
