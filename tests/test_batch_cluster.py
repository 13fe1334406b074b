"""`sds3d batch --ray-address` against a real Ray cluster on this machine (the driver dials the head on
loopback): a head node and two worker nodes
(`ray start`), each worker offering one (logical) GPU, and one worker node killed while its job runs.
The batch must still finish every job, the lost one on the surviving node."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sds3d.batch.runner import batch_generate  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
# Every node and the driver agree: no token authentication, no usage reports.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_node(*args: str) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group, so killing the group kills the whole node."""
    env = {**os.environ, **RAY_ENV, "RAY_memory_monitor_refresh_ms": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", f"--object-store-memory={100 * 2**20}", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_node(node: subprocess.Popen) -> None:
    os.killpg(node.pid, signal.SIGKILL)
    node.wait()


def wait_for_gpus(address: str, count: int, timeout: float = 120.0) -> None:
    """Until a driver connecting to ``address`` sees ``count`` GPUs in the cluster."""
    deadline = time.monotonic() + timeout
    script = f"import ray; ray.init(address='{address}', logging_level='ERROR'); print(int(ray.cluster_resources().get('GPU', 0)))"
    while True:
        probe = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.split()[-1:] == [str(count)]:
            return
        assert time.monotonic() < deadline, f"the cluster never showed {count} GPUs: {probe.stdout} {probe.stderr[-500:]}"
        time.sleep(1)


@pytest.fixture
def cluster(tmp_path_factory, monkeypatch):
    """(address, [worker node A, worker node B]) of a fresh loopback cluster; torn down afterwards."""
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    port, temp_dir = free_port(), tmp_path_factory.mktemp("ray")
    head = ray_node("--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false",
                    f"--temp-dir={temp_dir}")
    address = f"127.0.0.1:{port}"
    workers = []
    try:
        wait_for_gpus(address, 0)  # the head is up: worker nodes started before it would give up
        for count in (1, 2):  # one at a time: two nodes joining at once on one machine can collide
            workers.append(ray_node(f"--address={address}", "--num-cpus=1", "--num-gpus=1"))
            wait_for_gpus(address, count)
        yield address, workers
    finally:
        for node in [*workers, head]:
            if node.poll() is None:
                kill_node(node)


@pytest.mark.slow
def test_a_batch_on_a_cluster_survives_losing_a_worker_node(tiny_config, cluster, tiny_sd_dir, tmp_path):
    address, (_, doomed) = cluster
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na blue sphere\n")
    overrides = [f"guide.model={tiny_sd_dir}", "train.steps=150", "train.log_every=1", "train.ckpt_every=10",
                 "train.val_every=0", "export.video_frames=0"]
    out, result = tmp_path / "out", {}

    def run():
        result["index"] = batch_generate(prompts, tiny_config, overrides, address=address, retries=2, out_dir=out)

    batch = threading.Thread(target=run)
    batch.start()
    deadline = time.monotonic() + 300
    # Both jobs under way (one on each worker node): then one node goes, as a machine lost from a cluster would.
    while len([p for p in out.glob("*/metrics.jsonl") if p.read_text()]) < 2:
        assert batch.is_alive() and time.monotonic() < deadline, "the jobs never started"
        time.sleep(0.2)
    kill_node(doomed)
    batch.join(timeout=600)
    assert not batch.is_alive()
    records = result["index"].records
    assert [r.status for r in records.values()] == ["done", "done"]
    assert sorted(r.attempts for r in records.values()) == [1, 2]  # the lost job ran again on the other node
    assert all(Path(r.glb).is_file() for r in records.values())
