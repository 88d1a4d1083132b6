"""The data registry's first set-up survives a kill at its worst moment, and a registry left
half set-up (by a kill under an older version, or by hand) is repaired, not skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.snapshot.publish import publish_snapshot
from flywheel.snapshot.registry import DataRegistry, RegistryError
from flywheel.store import ContentStore
from tests.test_snapshot import DVC, SETTINGS, _rows

_PAUSE_AT_REMOTE = """#!/bin/sh
# the real dvc, except that `dvc remote ...` (the step after `dvc init`) waits to be killed
if [ "$1" = remote ]; then touch "{marker}"; sleep 600; fi
exec {dvc} "$@"
"""


def _kill_first_set_up(tmp_path: Path, registry: Path, remote: Path) -> None:
    marker = tmp_path / "at-remote"
    paused = tmp_path / "dvc-paused"
    paused.write_text(_PAUSE_AT_REMOTE.format(marker=marker, dvc=DVC))
    paused.chmod(0o755)
    code = ("import sys; from flywheel.snapshot.registry import DataRegistry; "
            f"r = DataRegistry({str(registry)!r}, {str(remote)!r}, {str(paused)!r})\n"
            "with r.lock(): r.ensure()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1], start_new_session=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, "the set-up ended before reaching `dvc remote`"
        assert time.time() < deadline, "the set-up never reached `dvc remote`"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the publisher and its dvc, as a node failure would
    proc.wait()


def test_a_kill_during_the_first_set_up_leaves_nothing_half_done(tmp_path, protocol):
    registry_path, remote = tmp_path / "registry", tmp_path / "remote"
    _kill_first_set_up(tmp_path, registry_path, remote)
    assert not registry_path.exists()  # git and DVC were initialised in a temporary sibling, never in place
    store = ContentStore(str(tmp_path / "store"))
    registry = DataRegistry(registry_path, str(remote), DVC)
    first = publish_snapshot(_rows(protocol, store, range(30)), store.get, registry, protocol, SETTINGS, {})
    assert first.publication.new and registry.versions() == [1]
    assert not list(tmp_path.glob(".registry.init-*"))  # the killed attempt's folder is cleaned up
    registry.get(1, tmp_path / "v1")
    assert (tmp_path / "v1" / "stats.json").exists()


def test_a_half_set_up_registry_is_finished_step_by_step(tmp_path, protocol):
    """The state a kill just after `dvc init` left before set-up became atomic: no commit, no remote, staged files."""
    path = tmp_path / "registry"
    path.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run([*DVC.split(), "init", "-q"], cwd=path, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    registry = DataRegistry(path, str(tmp_path / "remote"), DVC)
    store = ContentStore(str(tmp_path / "store"))
    first = publish_snapshot(_rows(protocol, store, range(30)), store.get, registry, protocol, SETTINGS, {})
    assert first.publication.new and registry.versions() == [1]
    log = subprocess.run(["git", "log", "--format=%s"], cwd=path, capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[-1] == "Initialise the cosmicman-hq data registry"
    assert any((tmp_path / "remote").rglob("*.dir"))  # pushed to the remote the set-up added


def test_a_folder_that_is_not_a_registry_is_refused_by_name(tmp_path, protocol):
    path = tmp_path / "elsewhere"
    path.mkdir()
    (path / "notes.txt").write_text("a user's own files")
    registry = DataRegistry(path, str(tmp_path / "remote"), DVC)
    with pytest.raises(RegistryError, match=r"elsewhere: exists, is not empty and is not a data registry"):
        with registry.lock():
            registry.ensure()
    assert sorted(p.name for p in path.iterdir()) == ["notes.txt"]
