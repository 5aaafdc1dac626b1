"""Children of the local stack die with it (PR_SET_PDEATHSIG), but only those the main thread starts: the
kernel ties that signal to the forking thread, and a child restarted from a short-lived thread (the chaos
benchmark's fault injector) must outlive that thread."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from cropq_cli.localstack import ManagedProcess

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_child_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    started: list[ManagedProcess] = []
    t = threading.Thread(target=lambda: started.append(ManagedProcess("s", SLEEPER, tmp_path / "s.log")))
    t.start()
    t.join()
    (child,) = started
    try:
        time.sleep(0.5)  # a child armed with the thread's death signal would be dead by now
        assert child.alive()
    finally:
        child.stop()


def test_a_child_of_the_main_thread_is_armed_to_die_with_its_parent(tmp_path: Path) -> None:
    # The parent here is a short-lived Python that starts a sleeper from its main thread and exits at once.
    code = (
        "import sys, pathlib; from cropq_cli.localstack import ManagedProcess\n"
        f"p = ManagedProcess('s', {SLEEPER!r}, pathlib.Path({str(tmp_path / 'm.log')!r}))\n"
        "print(p.pid, flush=True)\n"
        "import os; os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
        if "State:\tZ" in status:
            break
        time.sleep(0.05)
    status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
    assert not status or "State:\tZ" in status, f"the sleeper {pid} outlived its parent"
