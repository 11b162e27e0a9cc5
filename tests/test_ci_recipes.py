"""The hosted-CI recipes (.github/workflows, examples/ci) call what this repository has.

They cannot run here (no hosted runner, no network), so what can drift is checked: each parses, its
scripts exist, its `llamas` commands parse, its pytest options are the plugin's, its make targets exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from testbed.cli import build_parser

ROOT = Path(__file__).parent.parent
RECIPES = [ROOT / ".github/workflows/ci.yml", ROOT / "examples/ci/github-actions.yml",
           ROOT / "examples/ci/gitlab-ci.yml"]
TESTBED_CHECKOUT = "/opt/llamas/"  # where the recipes for other projects clone the testbed


def commands(recipe: Path) -> list[str]:
    """Every shell line the recipe runs: GitHub steps' `run`, GitLab jobs' `script`."""
    data = yaml.safe_load(recipe.read_text())
    scripts: list[str] = []
    if "jobs" in data:
        scripts = [step["run"] for job in data["jobs"].values() for step in job["steps"] if "run" in step]
    else:
        scripts = [line for job in data.values() if isinstance(job, dict) for line in job.get("script", [])]
    return [line.strip() for script in scripts for line in script.splitlines() if line.strip()]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: str(path.relative_to(ROOT)))
def test_a_ci_recipe_calls_what_the_repository_has(recipe: Path) -> None:
    lines = commands(recipe)
    assert lines
    plugin = (ROOT / "testbed/pytest_plugin.py").read_text()
    makefile = (ROOT / "Makefile").read_text()
    checked = 0
    for line in lines:
        for part in re.split(r"&&|\|\|", line):
            words = shlex.split(part)
            if not words:
                continue
            program = words[0]
            if program.startswith(TESTBED_CHECKOUT):
                assert (ROOT / program.removeprefix(TESTBED_CHECKOUT)).exists(), line
                checked += 1
            elif program.endswith("/llamas"):
                build_parser().parse_args(words[1:])  # exits (SystemExit) on an unknown command
                checked += 1
            elif program.endswith("/pytest"):
                for option in (word.split("=")[0] for word in words[1:] if word.startswith("--llamas")):
                    assert f'"{option}"' in plugin, line
                checked += 1
            elif program == "make":
                for target in words[1:]:
                    assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), line
                checked += 1
    assert checked >= 1
