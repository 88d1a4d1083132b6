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


def test_reused_memory_spares_the_page_faults_of_image_sized_temporaries():
    """Without fixed thresholds, glibc maps, faults in and unmaps each ~1 MB temporary in a fresh process (the
    filter chain lost 2 ms of 13 per image to it); after reuse_freed_memory() freed blocks are reused."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from flywheel.filters.piqe import piqe
        from flywheel.parallel import reuse_freed_memory
        if sys.argv[1] == "reuse":
            assert reuse_freed_memory()
        image = np.random.default_rng(0).integers(0, 255, (384, 256, 3), dtype=np.uint8)
        piqe(image)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(50):
            piqe(image)  # a dozen float64 planes of 0.8 MB per call
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    faults = {mode: int(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "reuse")}
    assert faults["default"] > 50 * 500, faults  # measured: ~1,250 pages (5 MB) faulted afresh per call
    assert faults["reuse"] < faults["default"] / 20, faults
