"""Pool workers die with the process that started them (a killed step leaves no orphans)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from flywheel.parallel import process_pool


def _pid() -> int:
    return os.getpid()


def _set_env(name: str, value: str) -> None:
    os.environ[name] = value


def _get_env(name: str) -> str | None:
    return os.environ.get(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def test_workers_are_killed_with_their_parent(tmp_path):
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from tests.test_worker_lifetime import _pid
        from flywheel.parallel import process_pool
        with process_pool(2) as pool:
            pids = {{pool.submit(_pid).result() for _ in range(8)}}
            open({str(pids)!r}, "w").write(" ".join(map(str, pids)))
            time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if pids.exists() and pids.read_text():
                break
            time.sleep(0.1)
        workers = [int(p) for p in pids.read_text().split()]
        assert workers and all(_alive(p) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "workers outlived their killed parent"
    finally:
        parent.kill()


def test_pool_runs_the_initializer_after_arming_the_signal():
    with process_pool(1, _set_env, ("COSMICMAN_TEST_INIT", "yes")) as pool:
        assert pool.submit(_get_env, "COSMICMAN_TEST_INIT").result() == "yes"
