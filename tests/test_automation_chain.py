"""The chain runs itself: a real ``dagster-daemon`` on a temporary instance, the test profile, and
one tick of the refresh schedule; nothing else is launched by hand."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHAIN = ("cosmicman_hq_snapshot", "plain_finetune_checkpoint", "daring_checkpoint", "adversarial_checkpoint",
         "evaluation_report")


class Daemon:
    """``dagster-daemon run`` on a temporary instance, with the CLI beside it."""

    def __init__(self, tmp: Path):
        self.home = tmp / "dagster_home"
        self.home.mkdir()
        shutil.copy(ROOT / "infra" / "dagster" / "dagster.yaml", self.home / "dagster.yaml")
        self.workspace_yaml = tmp / "workspace.yaml"
        self.workspace_yaml.write_text("load_from:\n  - python_module:\n      module_name: orchestration.definitions\n"
                                       f"      working_directory: {ROOT}\n")
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "COSMICMAN_PROFILE": "test",
                    "COSMICMAN_WORKSPACE": str(tmp / "workspace"),
                    "COSMICMAN_REFRESH_CRON": "* * * * *",  # a tick every minute instead of every Monday
                    "COSMICMAN_SYNTHETIC__TOTAL": "40",  # a finite source: the first batch takes all of it
                    "COSMICMAN_FILTER__WORKERS": "2"}
        self.log = open(tmp / "daemon.log", "w")
        self.proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace_yaml)], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.instance = dg.DagsterInstance.from_config(str(self.home))

    def cli(self, *args: str) -> None:
        proc = subprocess.run([str(BIN / "dagster"), *args, "-w", str(self.workspace_yaml)], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def count(self, asset: str) -> int:
        return len(self.instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records)

    def runs(self, *statuses: dg.DagsterRunStatus) -> list:
        return list(self.instance.get_runs(filters=dg.RunsFilter(statuses=list(statuses))))

    def scheduled_runs(self) -> int:
        return len(self.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": "weekly_source_refresh"})))

    def one_tick(self) -> float:
        """Start the schedule, stop it as soon as its tick has launched a run (a tick comes every minute: waiting
        for the run to finish instead can let a second one in), and return the seconds waited."""
        before = self.scheduled_runs()
        self.cli("schedule", "start", "weekly_source_refresh")
        waited = self.wait("a schedule tick", lambda: self.scheduled_runs() > before, 240, poll=0.5)
        self.cli("schedule", "stop", "weekly_source_refresh")
        assert self.scheduled_runs() == before + 1, "the schedule ticked twice before it was stopped"
        return waited

    def wait(self, what: str, done, timeout: float, poll: float = 2) -> float:
        t0 = time.time()
        while not done():
            failed = self.runs(dg.DagsterRunStatus.FAILURE)
            if failed:
                logs = "\n".join(e.message for e in self.instance.all_logs(failed[0].run_id) if e.is_error or
                                 (e.dagster_event and e.dagster_event.is_failure))[-4000:]
                pytest.fail(f"run {failed[0].run_id} ({failed[0].job_name}) failed while waiting for {what}:\n{logs}")
            assert self.proc.poll() is None, f"dagster-daemon exited ({self.proc.returncode}); see {self.log.name}"
            assert time.time() - t0 < timeout, f"no {what} after {timeout:.0f} s; see {self.log.name}"
            time.sleep(poll)
        return time.time() - t0

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.close()


@pytest.mark.slow
def test_one_schedule_tick_reaches_the_report_and_a_tick_without_new_data_trains_nothing(daemon):
    waited = daemon.one_tick()
    daemon.wait("first refresh run", lambda: daemon.count("raw_images") >= 1, 240)
    t0 = time.time()
    chain = daemon.wait("evaluation report", lambda: daemon.count("evaluation_report") >= 1, 1500)
    print(f"\nchain from the first batch to the evaluation report: {chain:.0f} s "
          f"(after {waited:.0f} s waiting for the schedule's tick)")
    daemon.wait("idle instance", lambda: not daemon.runs(dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED,
                                                           dg.DagsterRunStatus.STARTING), 600)
    first = {a: daemon.count(a) for a in ("raw_images", "filtered_pool", "annotated_pool", *CHAIN)}
    assert all(n == 1 for n in first.values()), first
    snapshot = daemon.instance.get_latest_materialization_event(dg.AssetKey("cosmicman_hq_snapshot"))
    assert snapshot.asset_materialization.metadata["version"].value == 1
    iterations = daemon.count("annotation_iteration")
    assert iterations >= 1

    # a second tick: the finite source has nothing new, the pool keeps the same images
    daemon.one_tick()
    daemon.wait("second refresh run", lambda: daemon.count("raw_images") >= 2, 240)
    daemon.wait("re-filtered pool", lambda: daemon.count("filtered_pool") >= 2, 300)
    time.sleep(45)  # three ticks of the automation sensor (15 s), one of the flywheel sensor (30 s)
    daemon.wait("idle instance", lambda: not daemon.runs(dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED,
                                                           dg.DagsterRunStatus.STARTING), 600)
    raw = daemon.instance.get_latest_materialization_event(dg.AssetKey("raw_images")).asset_materialization
    assert raw.metadata["dagster/row_count"].value == 0
    after = {a: daemon.count(a) for a in ("annotated_pool", *CHAIN)}
    assert after == {a: 1 for a in after}, after
    assert daemon.count("annotation_iteration") == iterations
    print(f"second tick: nothing published or trained ({time.time() - t0:.0f} s in all)")
