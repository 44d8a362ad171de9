"""Set-up files tell the same story: dependencies, ignores, example config, entry points."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flows.enrichment_flow import TransactionEnrichmentFlow

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_declares_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    text = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    conda = {_name(line.strip()[2:]) for line in text.splitlines()
             if line.strip().startswith("- ") and _name(line.strip()[2:]) not in ("python", "pip")}
    assert conda == declared


@pytest.mark.parametrize("pattern", ["*.db", ".metaflow/", "twilio_config.json", ".venv/"])
def test_gitignore_covers(pattern):
    assert pattern in (ROOT / ".gitignore").read_text().splitlines()


def test_twilio_example_has_the_documented_keys_and_no_real_secret():
    example = json.loads((ROOT / "twilio_config.example.json").read_text())
    assert set(example) == {"account_sid", "auth_token", "from_", "to"}


def test_every_step_and_the_flow_have_a_docstring():
    assert "Stages:" in TransactionEnrichmentFlow.__doc__
    steps = [name for name in dir(TransactionEnrichmentFlow)
             if callable(getattr(TransactionEnrichmentFlow, name, None))
             and hasattr(getattr(TransactionEnrichmentFlow, name), "is_step")]
    assert {"start", "ingest", "tag_transactions", "annotate_transactions", "index_wordings", "join",
            "end"} <= set(steps)
    for name in steps:
        doc = getattr(TransactionEnrichmentFlow, name).__doc__
        assert doc and len(doc.strip()) > 20, f"step {name} needs a docstring saying what it does and why"


def test_show_prints_the_docstrings_without_a_user_name(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path)}
    shown = subprocess.run([sys.executable, str(ROOT / "algorithm.py"), "show"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    output = shown.stdout + shown.stderr
    assert "Unknown user" not in output
    for text in ("Stages:", "Step ingest", "Parse and validate the CSV", "Step end", "Failure check"):
        assert text in output


@pytest.mark.flow
def test_algorithm_run_without_user_and_with_the_tags_alias(tmp_path):
    """The user's entry point: no USER/USERNAME/LOGNAME, --tags PATH, exit code 0."""
    tags = tmp_path / "tags.txt"
    tags.write_text("TOTO\n", encoding="utf-8")
    csv = tmp_path / "t.csv"
    csv.write_text("id,amount,wording\n1,10,TOTO x\n2,-5,TATA y\n", encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "algorithm.py"), "run", "--transactions", str(csv),
                           "--database", str(tmp_path / "db.db"), "--tags", str(tags)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    from enrich.store import open_store

    assert open_store(tmp_path / "db.db").rows("SELECT transaction_id, tag FROM tags") == [(1, "TOTO")]
