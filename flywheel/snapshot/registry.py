"""The DVC data registry that holds every CosmicMan-HQ version (DVC's data-registry pattern).

The registry is its own git repository with DVC. The dataset lives at one path
(``cosmicman-hq/``); each publication replaces that folder with a freshly written snapshot,
runs ``dvc add`` and ``dvc push`` (the remote receives only objects it does not have, so
unchanged shards are not uploaded again), commits the ``.dvc`` file and tags the commit
``cosmicman-hq-v<version>``. Consumers use standard DVC::

    dvc get <registry> cosmicman-hq --rev cosmicman-hq-v3 -o cosmicman-hq-v3

Atomicity: a version exists once its tag exists, and the tag is written last, after the
data is in the remote. A kill at any earlier point leaves every earlier tag intact and the
new version invisible; publishing again finishes the job (``dvc add``/``push`` are
idempotent, the commit is skipped when there is nothing to commit). The snapshot is
written into ``.staging/`` (ignored by git and DVC) and swapped into place by renames; a
swap interrupted half-way is undone on the next start.

DVC holds a repository lock, so publications must not overlap; a file lock here makes a
second publisher wait, and Dagster runs the publishing asset in a pool of one.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from flywheel.faults import kill_point


class RegistryError(RuntimeError):
    """A git or DVC command failed; the message has the command and its output."""


@dataclass
class Publication:
    version: int
    tag: str
    data_hash: str  # DVC's md5 of the dataset folder (".dir" object)
    uploaded: int  # files dvc push sent to the remote for this publication
    new: bool = True  # False when the inputs equalled the latest version and nothing was published


class DataRegistry:
    def __init__(self, path: str | Path, remote_url: str, dvc: str = "dvc", dataset: str = "cosmicman-hq",
                 remote_endpoint_url: str | None = None):
        self.path = Path(path).resolve()
        self.remote_url = remote_url
        self.dvc = dvc
        self.dataset = dataset
        self.remote_endpoint_url = remote_endpoint_url

    # ---- commands --------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0",
               "GIT_AUTHOR_NAME": "cosmicman publisher", "GIT_AUTHOR_EMAIL": "publisher@cosmicman.invalid",
               "GIT_COMMITTER_NAME": "cosmicman publisher", "GIT_COMMITTER_EMAIL": "publisher@cosmicman.invalid"}
        cmd = [self.dvc if args[0] == "dvc" else args[0], *args[1:]]
        proc = subprocess.run(cmd, cwd=cwd or self.path, env=env, capture_output=True, text=True, timeout=3600)
        if check and proc.returncode != 0:
            raise RegistryError(f"{' '.join(cmd)} (in {cwd or self.path}) failed with exit {proc.returncode}: "
                                f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def tag(self, version: int) -> str:
        return f"{self.dataset}-v{version}"

    @property
    def current(self) -> Path:
        """The registry's working copy of the latest version (what the next one follows)."""
        return self.path / self.dataset

    @property
    def staging(self) -> Path:
        return self.path / ".staging"

    # ---- set-up and recovery -------------------------------------------------------------
    def ensure(self) -> None:
        """Create the registry (git + DVC + default remote) if needed and undo a half-done swap.

        A new registry is built in a temporary sibling folder and renamed into place, so a kill
        during the first set-up leaves either nothing or a whole registry. A registry left half
        set-up by anything else (no first commit, no remote) is repaired step by step: each step
        is checked, none is skipped because a folder exists. Call under :meth:`lock`.
        """
        for leftover in self.path.parent.glob(f".{self.path.name}.init-*"):  # a first set-up killed earlier
            shutil.rmtree(leftover, ignore_errors=True)
        if not self._is_set_up():
            if self.path.exists() and any(self.path.iterdir()):
                if not ((self.path / ".git").exists() or (self.path / ".dvc").exists()):
                    raise RegistryError(f"{self.path}: exists, is not empty and is not a data registry (no .git, "
                                        f"no .dvc); point snapshot.registry_path at a new or empty folder")
                self._set_up(self.path)  # half set-up: finish it
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                building = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.init-", dir=self.path.parent))
                self._set_up(building)
                if self.path.exists():
                    self.path.rmdir()  # empty, checked above
                building.rename(self.path)
        previous = self.staging / "previous"
        if previous.exists() and not self.current.exists():  # killed between the two renames
            previous.rename(self.current)
        elif previous.exists():
            shutil.rmtree(previous)

    def _is_set_up(self) -> bool:
        config = self.path / ".dvc" / "config"
        if not (config.exists() and (self.path / ".git").exists()):
            return False
        return _has_remote(config) and self._run("git", "rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0

    def _set_up(self, where: Path) -> None:
        """Every set-up step, each done only if its result is missing (safe to repeat after a kill)."""
        if not (where / ".git").exists():
            self._run("git", "init", "-q", "-b", "main", cwd=where)
        if not (where / ".dvc" / "config").exists():
            self._run("dvc", "init", "-q", "-f", cwd=where)
            kill_point("registry.initialised")
        self._run("dvc", "config", "core.analytics", "false", cwd=where)
        if not _has_remote(where / ".dvc" / "config"):
            self._run("dvc", "remote", "add", "-d", "-f", "storage", self.remote_url, cwd=where)
            if self.remote_endpoint_url:
                self._run("dvc", "remote", "modify", "storage", "endpointurl", self.remote_endpoint_url, cwd=where)
        for name in (".gitignore", ".dvcignore"):
            text = (where / name).read_text() if (where / name).exists() else ""
            if "/.staging" not in text.splitlines():
                (where / name).write_text(text + ("" if not text or text.endswith("\n") else "\n") + "/.staging\n")
        if not (where / "README.md").exists():
            (where / "README.md").write_text(
                f"# {self.dataset} data registry\n\nVersions are git tags `{self.dataset}-v<N>`; get one with\n\n"
                f"    dvc get <this repository> {self.dataset} --rev {self.dataset}-v<N>\n")
        self._run("git", "add", ".gitignore", ".dvcignore", "README.md", ".dvc/config", ".dvc/.gitignore", cwd=where)
        if self._run("git", "diff", "--cached", "--quiet", check=False, cwd=where).returncode != 0:
            self._run("git", "commit", "-q", "-m", f"Initialise the {self.dataset} data registry", cwd=where)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One publisher at a time; the lock file sits beside the registry, so it exists before the registry does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- versions --------------------------------------------------------------------------
    def versions(self) -> list[int]:
        if not (self.path / ".git").exists():
            return []
        tags = self._run("git", "tag", "-l", f"{self.dataset}-v*").stdout.split()
        pattern = re.compile(rf"^{re.escape(self.dataset)}-v(\d+)$")
        return sorted(int(m.group(1)) for t in tags if (m := pattern.match(t)))

    def latest(self) -> int | None:
        v = self.versions()
        return v[-1] if v else None

    def data_hash(self, rev: str) -> str:
        text = self._run("git", "show", f"{rev}:{self.dataset}.dvc").stdout
        return str(yaml.safe_load(text)["outs"][0]["md5"])

    def new_staging(self, version: int) -> Path:
        folder = self.staging / f"v{version}"
        if folder.exists():  # a build interrupted earlier: start it again from nothing
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        return folder

    # ---- publishing ------------------------------------------------------------------------
    def publish(self, version: int, staged: Path, message: str) -> Publication:
        """Swap ``staged`` in as the dataset, add, push, commit and tag (call under :meth:`lock`)."""
        tag = self.tag(version)
        if tag in self._run("git", "tag", "-l", tag).stdout.split():
            return Publication(version, tag, self.data_hash(tag), 0, new=False)
        if staged.exists():
            previous = self.staging / "previous"
            if self.current.exists():
                self.current.rename(previous)
            staged.rename(self.current)
            if previous.exists():
                shutil.rmtree(previous)
            kill_point("registry.swapped")
        elif not self.current.exists():
            raise RegistryError(f"{staged}: no staged snapshot to publish as {tag}")
        self._run("dvc", "add", "-q", self.dataset)
        kill_point("registry.added")
        try:
            push = self._run("dvc", "push", "-r", "storage")
        except RegistryError as exc:
            raise RegistryError(f"{exc}\nNothing was published as {tag}; once the remote {self.remote_url} is reachable, "
                                f"publishing again finishes this version (objects already pushed are not sent again)") from None
        kill_point("registry.pushed")
        uploaded = int(m.group(1)) if (m := re.search(r"(\d+) files? pushed", push.stdout + push.stderr)) else 0
        self._run("git", "add", f"{self.dataset}.dvc", ".gitignore")
        if self._run("git", "diff", "--cached", "--quiet", check=False).returncode != 0:
            self._run("git", "commit", "-q", "-m", message)
        kill_point("registry.committed")
        self._run("git", "tag", "-a", tag, "-m", message)  # last: the version becomes visible
        return Publication(version, tag, self.data_hash(tag), uploaded)

    # ---- consuming -------------------------------------------------------------------------
    def get(self, version: int, out: Path) -> Path:
        """``dvc get`` of one version into ``out`` (a fresh folder), as any consumer would."""
        return get_version(str(self.path), self.tag(version), out, self.dvc, self.dataset)


def _has_remote(dvc_config: Path) -> bool:
    return '[\'remote "storage"\']' in dvc_config.read_text()


def get_version(registry_url: str, tag: str, out: Path, dvc: str = "dvc", dataset: str = "cosmicman-hq") -> Path:
    """Fetch ``dataset`` at ``tag`` from any registry URL (local path or git URL) into ``out``."""
    out = Path(out)
    if out.exists() or Path(f"{out}.version.yaml").exists():
        raise RegistryError(f"{out}: already exists; dvc get needs a fresh destination")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}

    def run(*cmd: str) -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RegistryError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")

    # where it came from, with the .dvc file's data hash, lands beside the data in
    # <out>.version.yaml; dvc get refuses .dvc files, so that one comes from a shallow clone
    with tempfile.TemporaryDirectory() as tmp:
        run("git", "clone", "-q", "--depth", "1", "--branch", tag, registry_url, tmp)
        dvc_file = yaml.safe_load((Path(tmp) / f"{dataset}.dvc").read_text())
    run(dvc, "get", registry_url, dataset, "--rev", tag, "-o", str(out))
    Path(f"{out}.version.yaml").write_text(yaml.safe_dump({"registry": registry_url, "tag": tag,
                                                           "data_hash": str(dvc_file["outs"][0]["md5"])}))
    return out
