"""The rendered NetworkPolicies let each cropq role reach only what it needs.

A small evaluator answers "may pod P send to peer Q on port N?" the way Kubernetes combines policies
(default deny once any policy selects the pod for a direction; allowed if any rule of any selecting policy
matches), and the tests ask it about every role and peer.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.unit.test_kustomize import OVERLAYS, k8s_copy, render

Obj = dict[str, Any]
ROLES = ("api", "worker", "webhook-worker")
PRIVATE = ["10.1.2.3", "172.20.0.5", "192.168.1.1", "100.64.0.1", "169.254.169.254", "fd00::1", "fe80::1"]
PUBLIC = ["93.184.216.34", "2606:4700::1111"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    k8s = k8s_copy(tmp_path_factory.mktemp("deploy"))
    return {overlay: render(k8s / "overlays" / overlay) for overlay in OVERLAYS}


def matches(selector: Obj, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        op = expr["operator"]
        if op == "In" and not (present and labels[expr["key"]] in expr["values"]):
            return False
        if op == "NotIn" and present and labels[expr["key"]] in expr["values"]:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def pod_labels(objs: list[Obj], role: str) -> dict[str, str]:
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == f"cropq-{role}"]
    labels: dict[str, str] = dep["spec"]["template"]["metadata"]["labels"]
    return labels


def peer_matches(peer: Obj, target: Obj, namespace: str) -> bool:
    """``target``: {"labels", "namespace", "namespace_labels"} for a pod, or {"ip"} for an address."""
    if "ipBlock" in peer:
        if "ip" not in target:
            return False
        ip = ipaddress.ip_address(target["ip"])
        block = peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"])
        if ip.version != net.version or ip not in net:
            return False
        return not any(
            ip.version == ipaddress.ip_network(e).version and ip in ipaddress.ip_network(e)
            for e in block.get("except", [])
        )
    if "ip" in target:
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], target["namespace_labels"]):
            return False
    elif target["namespace"] != namespace:
        return False
    return matches(peer.get("podSelector", {}), target["labels"])


def port_matches(ports: list[Obj] | None, protocol: str, port: int) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port", port) == port for p in ports)


def allowed(objs: list[Obj], role: str, direction: str, peer: Obj, protocol: str, port: int) -> bool:
    """May the ``role`` pod send to (egress) or receive from (ingress) ``peer`` on ``protocol/port``?"""
    labels = pod_labels(objs, role)
    kind = "Egress" if direction == "egress" else "Ingress"
    policies = [
        o
        for o in objs
        if o["kind"] == "NetworkPolicy"
        and matches(o["spec"]["podSelector"], labels)
        and kind in o["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True  # not isolated
    for policy in policies:
        namespace = policy["metadata"]["namespace"]
        for rule in policy["spec"].get(direction, []):
            peers = rule.get("to" if direction == "egress" else "from")
            if (peers is None or any(peer_matches(p, peer, namespace) for p in peers)) and port_matches(
                rule.get("ports"), protocol, port
            ):
                return True
    return False


def namespace_of(objs: list[Obj]) -> str:
    (ns,) = {o["metadata"]["namespace"] for o in objs}
    return str(ns)


def pod(objs: list[Obj], labels: dict[str, str], namespace: str | None = None) -> Obj:
    ns = namespace or namespace_of(objs)
    return {"labels": labels, "namespace": ns, "namespace_labels": {"kubernetes.io/metadata.name": ns}}


def config(objs: list[Obj]) -> dict[str, str]:
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


def s3_peers(objs: list[Obj]) -> list[Obj]:
    (policy,) = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "cropq-s3"]
    (rule,) = policy["spec"]["egress"]
    out: list[Obj] = []
    for peer in rule["to"]:
        if "ipBlock" in peer:
            out.append({"ip": str(next(ipaddress.ip_network(peer["ipBlock"]["cidr"]).hosts()))})
        else:
            out.append(pod(objs, peer["podSelector"]["matchLabels"]))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_cropq_pod_is_isolated_both_ways(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    stranger = pod(objs, {"app": "something-else"})
    for role in ROLES:
        assert not allowed(objs, role, "egress", stranger, "TCP", 8080), role
        assert not allowed(objs, role, "egress", {"ip": "10.9.9.9"}, "TCP", 443), role
        if role != "api":
            assert not allowed(objs, role, "ingress", stranger, "TCP", 8000), role


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_accepts_clients_from_anywhere_on_its_port_only(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    for client in (pod(objs, {"app": "ingress-nginx"}, "ingress"), {"ip": PUBLIC[0]}):
        assert allowed(objs, "api", "ingress", client, "TCP", 8000)
        assert not allowed(objs, "api", "ingress", client, "TCP", 22)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_role_reaches_dns_and_redis(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    dns = pod(objs, {"k8s-app": "kube-dns"}, "kube-system")
    redis_port = urlparse(config(objs)["CROPQ_REDIS_URL"]).port or 6379
    redis = pod(objs, {"app.kubernetes.io/name": "redis"})
    for role in ROLES:
        assert allowed(objs, role, "egress", dns, "UDP", 53) and allowed(objs, role, "egress", dns, "TCP", 53)
        assert allowed(objs, role, "egress", redis, "TCP", redis_port), role
        assert not allowed(objs, role, "egress", redis, "TCP", redis_port + 1), role


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_s3_for_the_api_and_crop_workers_only(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    cfg = config(objs)
    host_port = cfg["CROPQ_S3_ENDPOINT"].rsplit(":", 1)
    port = int(host_port[1]) if len(host_port) == 2 else (443 if cfg["CROPQ_S3_SECURE"] == "true" else 80)
    for s3 in s3_peers(objs):
        assert allowed(objs, "api", "egress", s3, "TCP", port)
        assert allowed(objs, "worker", "egress", s3, "TCP", port)
        if "labels" in s3:  # an in-cluster S3 server: callback workers never need it
            assert not allowed(objs, "webhook-worker", "egress", s3, "TCP", port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_workers_reach_the_public_internet(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    for ip in PUBLIC:
        # Callbacks and http(s) sources go to any port their URL names.
        for port in (443, 80, 8443):
            assert allowed(objs, "webhook-worker", "egress", {"ip": ip}, "TCP", port)
            assert allowed(objs, "worker", "egress", {"ip": ip}, "TCP", port)
        assert not allowed(objs, "api", "egress", {"ip": ip}, "TCP", 443)
    for ip in PRIVATE:
        for role in ROLES:
            assert not allowed(objs, role, "egress", {"ip": ip}, "TCP", 443), (role, ip)


def test_the_evaluator_sees_an_opened_policy(rendered: dict[str, list[Obj]]) -> None:
    """The checks above can fail: a policy opening the API to the world is noticed."""
    objs = [dict(o) for o in rendered[OVERLAYS[0]]]
    objs.append(
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "oops", "namespace": namespace_of(objs)},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "api"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
            },
        }
    )
    assert allowed(objs, "api", "egress", {"ip": PUBLIC[0]}, "TCP", 443)
