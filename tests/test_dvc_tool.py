"""DVC runs as an isolated command-line tool, called the way git is called."""

import subprocess

from flywheel.settings import load_settings


def test_dvc_runs_from_its_own_environment(tmp_path):
    dvc = load_settings("test").dvc_command()
    version = subprocess.run([dvc, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("3.")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    init = subprocess.run([dvc, "init", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / ".dvc" / "config").exists()


def test_project_environment_has_no_dvc_and_the_right_antlr():
    import importlib.metadata as md
    import importlib.util

    assert importlib.util.find_spec("dvc") is None
    assert md.version("antlr4-python3-runtime").startswith("4.13")


def test_dvc_yaml_parses_and_plans_its_stages():
    from flywheel.settings import PROJECT_ROOT

    dvc = load_settings("test").dvc_command()
    dry = subprocess.run([dvc, "repro", "--dry", "--force"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "raw_synthetic" in dry.stdout and "cosmicman source synthetic" in dry.stdout
