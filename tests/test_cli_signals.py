"""SIGTERM ends a run like Ctrl-C (one line, exit 143, no temporary output); what `kill -9` left is removed later."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.files import atomic_output, stale_temps, temp_name

from tiny_models import save_tiny_eg3d


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _plant(final: Path, pid: int) -> Path:
    host = temp_name(final).split(".")[2].rsplit("-", 1)[0]
    path = final.parent / temp_name(final, tag=f"{host}-{pid}")
    path.write_bytes(b"half a video")
    return path


def test_temp_names_carry_host_and_pid(tmp_path: Path) -> None:
    name = temp_name(tmp_path / "out.mp4")
    assert name.startswith(".out.") and name.endswith(".part.mp4") and f"-{os.getpid()}." in name


def test_stale_temps_of_dead_processes_only(tmp_path: Path) -> None:
    final = tmp_path / "out.mp4"
    dead = _plant(final, _dead_pid())
    live = _plant(final, os.getpid())
    other_host = tmp_path / f".out.elsewhere-{_dead_pid()}.0123abcd.part.mp4"
    other_host.write_bytes(b"another machine's")
    foreign = tmp_path / ".out.mine.part.mp4"
    foreign.write_bytes(b"not our name")
    assert stale_temps(final) == [dead]
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"
    assert not dead.exists() and live.exists() and other_host.exists() and foreign.exists()


@pytest.fixture(scope="module")
def tiny_eg3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_eg3d(tmp_path_factory.mktemp("eg3d") / "tiny.safetensors")


def _sample(tiny_eg3d: Path, out: Path, frames: int) -> list[str]:
    return ["sample", "-o", str(out), "--eg3d", str(tiny_eg3d), "--frames", str(frames), "--device", "cpu"]


def test_sigterm_exits_143_with_one_line_and_no_temp_file(tiny_eg3d: Path, tmp_path: Path) -> None:
    out = tmp_path / "term.mp4"
    command = [sys.executable, "-m", "nvsvideo.cli", *_sample(tiny_eg3d, out, 100000)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".term.*.part.mp4")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: terminated (SIGTERM); unfinished outputs were removed"], err
    assert list(tmp_path.iterdir()) == []

    # A run killed outright (kill -9) leaves its temporary file; the next run for that output removes it.
    stale = _plant(out, _dead_pid())
    done = CliRunner().invoke(app, _sample(tiny_eg3d, out, 2))
    assert done.exit_code == 0, done.output
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["term.mp4"]


BATCH_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
import batch_jobs as syn
from nvsvideo.batch import ProcessExecutor, run_batch
from nvsvideo.cli import sigterm_as_interrupt
from nvsvideo.errors import Terminated

if __name__ == "__main__":
    video = Path(sys.argv[1]) / "a.npy"
    syn.write_frames(video, np.zeros((4, 64, 64, 3), np.uint8))
    try:
        with sigterm_as_interrupt():  # what every command runs under
            run_batch([str(video)], video.parent / "out", {"work": 10**8}, syn.blur_job,
                      executor=ProcessExecutor(workers=1), extensions={".npy"}, suffix=".npy")
    except Terminated:
        print("terminated")
"""


def test_sigterm_stops_batch_worker_processes_too(tmp_path: Path) -> None:
    # A worker busy for hours (10**8 blurs) must not hold the driver's exit until it finishes.
    script = tmp_path / "run.py"
    script.write_text(BATCH_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

    def workers() -> list[int]:
        # The pool's worker, not multiprocessing's resource tracker (which exits on its own).
        pids = [int(pid) for pid in children.read_text().split()] if proc.poll() is None else []
        return [pid for pid in pids if b"spawn_main" in _cmdline(pid)]

    deadline = time.monotonic() + 120
    while proc.poll() is None and not workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    started = workers()
    assert started, "no worker process started"
    time.sleep(2)  # let the worker start its job
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
        assert out.strip() == "terminated"
        time.sleep(0.5)
        assert not [pid for pid in started if _cmdline(pid)]
    finally:
        for pid in started:
            if _cmdline(pid):
                os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


SLOW_BATCH_SCRIPT = """
import json
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
import batch_jobs as syn
from nvsvideo.batch import ProcessExecutor, RayExecutor, run_batch
from nvsvideo.cli import sigterm_as_interrupt
from nvsvideo.errors import Terminated

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    executor = ProcessExecutor(workers=2) if sys.argv[3] == "process" else RayExecutor(num_cpus=2, workers=2)
    rows = []
    for name, seconds in (("quick", 0), ("slow1", 3600), ("slow2", 3600)):
        syn.write_frames(folder / f"{name}.npy", np.zeros((2, 8, 8, 3), np.uint8))
        rows.append(json.dumps({"input": str(folder / f"{name}.npy"), "seconds": seconds}))
    (folder / "jobs.jsonl").write_text("\\n".join(rows) + "\\n")
    try:
        with sigterm_as_interrupt():
            run_batch([str(folder / "jobs.jsonl")], folder / "out", {"seconds": 0}, syn.slow_job,
                      executor=executor, extensions={".npy"}, suffix=".npy")
    except Terminated:
        print("terminated")
        sys.exit(143)
"""


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_sigterm_during_a_batch_removes_the_workers_temporary_outputs(tmp_path: Path, kind: str) -> None:
    # Ray's driver used to dump a C++ stack and abort on SIGTERM, its actors' temporary files left behind.
    if kind == "ray":
        pytest.importorskip("ray", reason="Ray is not installed (pip install 'nvsvideo[ray]'); CI installs it")
    script = tmp_path / "run.py"
    script.write_text(SLOW_BATCH_SCRIPT)
    out = tmp_path / "out"
    # Ray's workers import the job's module by name: they need the tests folder on their path.
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    # Its own process group, signalled as a whole, as `timeout` and service managers do.
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent), kind],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": path})
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    started: list[int] = []
    try:
        # Both workers hold a temporary output: the quick video is done and one slow video is being written.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # Ray starts in about 10 s
            if (out / "quick.npy").exists() and list(out.glob(".slow*.part.npy")):
                break
            time.sleep(0.1)
        assert proc.poll() is None and list(out.glob(".slow*.part.npy")), proc.communicate()[1]
        started = [int(pid) for pid in children.read_text().split()]
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 143 and stdout.strip() == "terminated", stderr
        assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr
        assert sorted(p.name for p in out.iterdir()) == ["quick.npy", "report.jsonl"]
        report = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
        assert [(Path(r["output"]).name, r["status"]) for r in report] == [("quick.npy", "ok")]
        time.sleep(0.5)
        assert not [pid for pid in started if b"spawn_main" in _cmdline(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in started:
            if b"spawn_main" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
