"""deploy/k8s renders per overlay, and every rendered object is valid Kubernetes.

No kustomize binary is needed: ``render()`` implements the few kustomize features the overlays use
(resources, namespace, images, strategic-merge patches, secretGenerator, replacements) in kustomize's order.
Where ``kubectl`` (or ``kustomize``) is installed, one test renders every overlay with it too and requires
the same objects, so the Python renderer cannot drift from the real one unnoticed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.30"  # the oldest minor the manifests promise to fit (deploy/README.md)

# Lists strategic merge patches merge item by item (by this key); every other list is replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}

Obj = dict[str, Any]


# --- the renderer ---------------------------------------------------------------------------------


def render(directory: Path) -> list[Obj]:
    """The objects ``kustomize build directory`` prints (generated names carry a content hash)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objs: list[Obj] = []
    for res in k.get("resources", []):
        path = directory / res
        if path.is_dir():
            objs += render(path)
        else:
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    renamed: dict[tuple[str, str], str] = {}
    for gen in k.get("secretGenerator", []):
        secret = generate_secret(directory, gen)
        renamed[("Secret", gen["name"])] = secret["metadata"]["name"]
        objs.append(secret)
    for patch in k.get("patches", []):
        apply_patch(directory, objs, patch)
    if "namespace" in k:
        for obj in objs:
            obj["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        set_image(objs, image)
    for rep in k.get("replacements", []):
        replace(objs, rep)
    rename_references(objs, renamed)
    return objs


def generate_secret(directory: Path, gen: Obj) -> Obj:
    data: dict[str, str] = {}
    for env_file in gen.get("envs", []):
        for line in (directory / env_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                data[key.strip()] = value
    for spec in gen.get("files", []):
        key, _, path = spec.rpartition("=")
        data[key or Path(path).name] = (directory / path).read_text()
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())}
    digest = hashlib.sha256(json.dumps(encoded, sort_keys=True).encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": gen.get("type", "Opaque"),
        "metadata": {"name": f"{gen['name']}-{digest}"},
        "data": encoded,
    }


def apply_patch(directory: Path, objs: list[Obj], patch: Obj) -> None:
    body = yaml.safe_load(patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text())
    target = patch.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
    matched = [o for o in objs if selects(target, o)]
    assert matched, f"patch target {target} matches nothing"
    for obj in matched:
        merge(obj, body)


def selects(select: Obj, obj: Obj) -> bool:
    return all(obj.get(field, obj["metadata"].get(field)) == want for field, want in select.items())


def merge(into: Obj, patch: Obj) -> None:
    """Strategic merge: maps merge, a null deletes, keyed lists merge by key, other lists are replaced."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(into.get(key), list):
            by = MERGE_KEYS[key]
            for item in value:
                same = [existing for existing in into[key] if existing.get(by) == item.get(by)]
                if same:
                    merge(same[0], item)
                else:
                    into[key].append(copy.deepcopy(item))
        else:
            into[key] = copy.deepcopy(value)


def set_image(objs: list[Obj], image: Obj) -> None:
    for obj in objs:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, tag = container["image"].split("@", 1)[0], ""
            if ":" in name.rsplit("/", 1)[-1]:  # a tag, not a registry port
                name, tag = name.rsplit(":", 1)
            if name != image["name"]:
                continue
            ref = image.get("newName", name)
            if image.get("newTag", tag):
                ref += ":" + image.get("newTag", tag)
            if image.get("digest"):
                ref += "@" + image["digest"]
            container["image"] = ref


def path_parts(field_path: str) -> list[str]:
    return re.findall(r"\[[^\]]*\]|[^.\[\]]+", field_path)


def walk(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if part.startswith("[") and "=" in part:
            key, _, value = part[1:-1].partition("=")
            (node,) = [item for item in node if str(item.get(key)) == value]
        else:
            node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def replace(objs: list[Obj], rep: Obj) -> None:
    src = rep["source"]
    (source,) = [o for o in objs if selects({"kind": src["kind"], "name": src["name"]}, o)]
    value = walk(source, path_parts(src.get("fieldPath", "metadata.name")))
    for target in rep["targets"]:
        for obj in (o for o in objs if selects(target["select"], o)):
            for field_path in target["fieldPaths"]:
                *parent_parts, leaf = path_parts(field_path)
                parent = walk(obj, parent_parts)
                options = target.get("options", {})
                if "delimiter" in options:
                    pieces = str(parent[leaf]).split(options["delimiter"])
                    pieces[options.get("index", 0)] = str(value)
                    parent[leaf] = options["delimiter"].join(pieces)
                else:
                    parent[leaf] = value


def rename_references(objs: list[Obj], renamed: dict[tuple[str, str], str]) -> None:
    """Point envFrom, env and volumes at the generated (hash-suffixed) names."""
    for obj in objs:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            for ref in container.get("envFrom", []):
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if field in ref:
                        ref[field]["name"] = renamed.get((kind, ref[field]["name"]), ref[field]["name"])
            for env in container.get("env", []):
                key_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if key_ref:
                    key_ref["name"] = renamed.get(("Secret", key_ref["name"]), key_ref["name"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                volume["secret"]["secretName"] = renamed.get(("Secret", name), name)


# --- rendering the repository's overlays ----------------------------------------------------------

SAMPLE_SECRETS = {
    "secrets.env": "CROPQ_S3_ACCESS_KEY=cropq\nCROPQ_S3_SECRET_KEY=sample-s3-secret\n"
    f"CROPQ_SECRET_KEY={'k' * 40}\n",
    "admin-keys.json": json.dumps(
        [{"AccessKeyId": "admin-sample1", "AccessKeySecret": "sample-admin-secret", "Projects": ["*"]}]
    )
    + "\n",
}


def k8s_copy(tmp: Path) -> Path:
    """deploy/k8s copied to ``tmp`` with the files an operator writes (never committed) filled in."""
    dest = tmp / "k8s"
    shutil.copytree(K8S, dest)
    for overlay in OVERLAYS:
        for name, text in SAMPLE_SECRETS.items():
            (dest / "overlays" / overlay / name).write_text(text)
    return dest


@pytest.fixture(scope="module")
def k8s_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return k8s_copy(tmp_path_factory.mktemp("deploy"))


def rendered(k8s_dir: Path, overlay: str) -> list[Obj]:
    return render(k8s_dir / "overlays" / overlay)


def by_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


# --- tests ----------------------------------------------------------------------------------------


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_kubernetes(k8s_dir: Path, overlay: str) -> None:
    objs = rendered(k8s_dir, overlay)
    checked = 0
    for obj in objs:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema in kubernetes-validate (test_keda_scaledobject_fields)
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked == len(objs) - 1


def test_the_validator_refuses_unknown_fields(k8s_dir: Path) -> None:
    """The validation above can fail: strict mode rejects a misspelled field."""
    dep = copy.deepcopy(by_kind(rendered(k8s_dir, "prod"), "Deployment")["cropq-api"])
    dep["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBERNETES_VERSION, strict=True)


# ScaledObject fields as KEDA 2.x documents them (keda.sh/docs/2.x/reference/scaledobject-spec/).
KEDA_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
KEDA_REDIS_METADATA = {
    "address",
    "host",
    "port",
    "username",
    "passwordFromEnv",
    "usernameFromEnv",
    "databaseIndex",
    "listName",
    "listLength",
    "activationListLength",
    "enableTLS",
    "unsafeSsl",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scaledobject_fields(k8s_dir: Path, overlay: str) -> None:
    objs = rendered(k8s_dir, overlay)
    (so,) = by_kind(objs, "ScaledObject").values()
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert set(spec) <= KEDA_SPEC, set(spec) - KEDA_SPEC
    assert spec["scaleTargetRef"]["name"] in by_kind(objs, "Deployment")
    assert set(spec["scaleTargetRef"]) <= {"name", "kind", "apiVersion", "envSourceContainerName"}
    assert isinstance(spec["minReplicaCount"], int) and isinstance(spec["maxReplicaCount"], int)
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert set(spec["fallback"]) <= {"failureThreshold", "replicas", "behavior"}
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    for policy in spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"]:
        assert policy["type"] in {"Pods", "Percent"} and policy["periodSeconds"] > 0
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis"
        assert set(trigger) <= {"type", "metadata", "authenticationRef", "name", "useCachedMetrics"}
        meta = trigger["metadata"]
        assert set(meta) <= KEDA_REDIS_METADATA, set(meta) - KEDA_REDIS_METADATA
        assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"


def test_overlays_differ_where_environments_do(k8s_dir: Path) -> None:
    dev, prod = rendered(k8s_dir, "dev"), rendered(k8s_dir, "prod")
    namespaces = {o["metadata"]["namespace"] for o in dev}, {o["metadata"]["namespace"] for o in prod}
    assert len(namespaces[0]) == len(namespaces[1]) == 1 and namespaces[0] != namespaces[1]
    api = by_kind(dev, "Deployment")["cropq-api"], by_kind(prod, "Deployment")["cropq-api"]
    assert api[0]["spec"]["replicas"] < api[1]["spec"]["replicas"]
    keda = (
        next(iter(by_kind(dev, "ScaledObject").values())),
        next(iter(by_kind(prod, "ScaledObject").values())),
    )
    assert keda[0]["spec"]["maxReplicaCount"] < keda[1]["spec"]["maxReplicaCount"]
    # A PDB's minAvailable equal to the replica count would block every node drain.
    for objs in (dev, prod):
        for pdb in by_kind(objs, "PodDisruptionBudget").values():
            selected = [
                d
                for d in by_kind(objs, "Deployment").values()
                if pdb["spec"]["selector"]["matchLabels"].items()
                <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            (dep,) = selected
            if "minAvailable" in pdb["spec"] and "replicas" in dep["spec"]:
                assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"], pdb["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_come_from_the_overlay(k8s_dir: Path, overlay: str) -> None:
    base_images = {
        c["image"]
        for d in by_kind(render(K8S / "base"), "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    for dep in by_kind(rendered(k8s_dir, overlay), "Deployment").values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert c["image"] not in base_images, f"{overlay} keeps the base image {c['image']}"
            assert "/" in c["image"].split(":")[0], f"{c['image']}: name a registry"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_references_resolve(k8s_dir: Path, overlay: str) -> None:
    objs = rendered(k8s_dir, overlay)
    secrets, configs = by_kind(objs, "Secret"), by_kind(objs, "ConfigMap")
    for dep in by_kind(objs, "Deployment").values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for ref in c["envFrom"]:
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in secrets, ref
                else:
                    assert ref["configMapRef"]["name"] in configs, ref


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def without_hashes(objs: list[Obj], generated: set[str]) -> list[Obj]:
    """Objects with generated names' hash suffixes blanked (the Python renderer's hash is its own) and
    Secret data decoded (kustomize wraps base64 lines)."""
    objs = copy.deepcopy(objs)
    for obj in objs:
        if obj["kind"] == "Secret":
            obj["data"] = {k: base64.b64decode("".join(v.split())).decode() for k, v in obj["data"].items()}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, generated)) + r")-[a-z0-9]{10}\b")
    text = json.dumps(objs, sort_keys=True)
    return sorted(json.loads(pattern.sub(r"\1-HASH", text)), key=lambda o: (o["kind"], o["metadata"]["name"]))


@pytest.mark.skipif(kustomize_command() is None, reason="no kustomize or kubectl binary to compare with")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_python_renderer_matches_kustomize(k8s_dir: Path, overlay: str) -> None:
    command = kustomize_command()
    assert command
    directory = k8s_dir / "overlays" / overlay
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120, check=True)
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
    generated = {
        g["name"] for g in yaml.safe_load((directory / "kustomization.yaml").read_text())["secretGenerator"]
    }
    assert without_hashes(render(directory), generated) == without_hashes(theirs, generated)
