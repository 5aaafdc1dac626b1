"""The API runs where the engine's heavy dependencies are not installed (the ``api`` extra has none of them).

A fresh interpreter makes numpy, OpenCV, onnxruntime and onnx unimportable before anything else is imported,
then builds the app and serves requests through its whole lifespan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("numpy", "cv2", "onnxruntime", "onnx")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    HEAVY = set(sys.argv[1].split(","))

    class Absent(importlib.abc.MetaPathFinder):
        # As if the package were not installed: any import of it, or of a submodule, fails.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Absent())

    blocked = []
    for name in sorted(HEAVY):
        try:
            __import__(name)
        except ImportError:
            blocked.append(name)

    from fastapi.testclient import TestClient

    import api.main

    answers = {}
    with TestClient(api.main.create_app()) as client:
        for path in ("/healthz", "/openapi.json"):
            r = client.get(path)
            answers[path] = [r.status_code, len(r.content)]
    loaded = sorted({m.split(".")[0] for m in sys.modules} & HEAVY)
    print(json.dumps({"blocked": blocked, "answers": answers, "loaded": loaded}))
    """
)


def test_the_api_starts_and_answers_without_numpy_opencv_or_onnx(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")},
        "CROPQ_SECRET_KEY": "test-secret-key-for-encryption-0123456789",
        # Nothing listens here: the lifespan only builds clients, and /healthz needs no dependency.
        "CROPQ_REDIS_URL": "redis://127.0.0.1:1/0",
        "CROPQ_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(HEAVY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The finder really hides them (in this environment all four are installed)...
    assert result["blocked"] == sorted(HEAVY)
    # ... and the app still serves.
    assert result["answers"]["/healthz"][0] == 200
    status, size = result["answers"]["/openapi.json"]
    assert status == 200 and size > 1000
    assert result["loaded"] == []
