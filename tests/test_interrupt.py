"""Ctrl-C and SIGTERM stop `memorize dataset` with the embedded generator quickly and leave no process."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the processes left behind")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_the_generator_within_seconds(prefect_server, small_model, tmp_path, sig):
    doc = tmp_path / "bakery.md"
    doc.write_text("The Plumtree Bakery opens at six in the morning. Its owner is Marta Quell. " * 20 + "\n")
    log = tmp_path / "out" / "logs" / "generator-server.log"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "dataset", str(doc), "--context", "A bakery",
                             "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                             "--temperatures", "3"], env={**os.environ, "PREFECT_API_URL": prefect_server},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (log.exists() and "/health" in log.read_text()):  # the server answered: requests start now
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        assert time.monotonic() < deadline, "the generator server did not start"
        time.sleep(0.5)
    time.sleep(3)  # a request is in flight
    spawned = _descendants(proc.pid)
    assert spawned, "the generator server runs as a child process"
    sent = time.monotonic()
    proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0]
    took = time.monotonic() - sent
    time.sleep(1)
    assert took <= 10, f"took {took:.1f}s to exit:\n{output[-2000:]}"
    assert not [p for p in spawned if _alive(p)], "processes left behind"
    assert proc.returncode != 0
