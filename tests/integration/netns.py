"""A throwaway test network: a Linux bridge in the root namespace and N "hosts", each a network namespace
joined to the bridge by a veth pair, with its own address on a private /24 nobody else uses here.

Processes started under ``host.launcher`` (``ip netns exec <ns>``) reach servers bound on the bridge
address, and nothing else but their own loopback. ``cut(host)`` takes the host's switch port down:
its packets are dropped both ways, so open TCP connections hang (no RST, no FIN) and new ones fail,
as when a machine drops off the network; ``restore(host)`` brings the port back and the hung
connections carry on. Needs root (CAP_NET_ADMIN) and iproute2; ``host_network`` raises
``NetworkUnavailable`` saying what failed otherwise.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network

IFNAMSIZ = 15  # longest Linux interface name


class NetworkUnavailable(RuntimeError):
    """The test network could not be built (not root, no iproute2, no CAP_NET_ADMIN...)."""


def ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError as e:
        raise NetworkUnavailable("the `ip` command (iproute2) is not installed") from e
    if done.returncode != 0:
        raise NetworkUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str
    port_link: str  # the veth end in the root namespace, enslaved to the bridge: the host's switch port

    @property
    def launcher(self) -> tuple[str, ...]:
        """Prefix of a command line that runs it on this host."""
        return ("ip", "netns", "exec", self.namespace)


@dataclass
class HostNetwork:
    bridge: str
    subnet: IPv4Network
    hosts: list[Host] = field(default_factory=list)
    # What exists so far, for teardown.
    namespaces: list[str] = field(default_factory=list)
    port_links: list[str] = field(default_factory=list)
    bridge_created: bool = False

    @property
    def bridge_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def cut(self, host: Host) -> None:
        ip("link", "set", host.port_link, "down")

    def restore(self, host: Host) -> None:
        ip("link", "set", host.port_link, "up")

    def restore_all(self) -> None:
        for host in self.hosts:
            self.restore(host)

    def close(self) -> list[str]:
        """Remove everything, whatever state it is in; returns what could not be removed. The veth pairs
        go first: a deleted namespace takes its own with it, but only later, in the background."""
        commands = [("link", "delete", link) for link in self.port_links]
        commands += [("netns", "delete", ns) for ns in self.namespaces]
        if self.bridge_created:
            commands.append(("link", "delete", self.bridge))
        leftovers = []
        for args in commands:
            try:
                ip(*args)
            except NetworkUnavailable as e:
                leftovers.append(str(e))
        return leftovers


def _networks_in_use() -> list[IPv4Network | IPv6Network]:
    used = [ip_network("127.0.0.0/8")]
    for route in json.loads(ip("-4", "-j", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ip_network(dst, strict=False))
    for link in json.loads(ip("-4", "-j", "addr", "show") or "[]"):
        for a in link.get("addr_info", []):
            used.append(ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return used


PRIVATE_BLOCKS = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def free_subnet(rng: random.Random | None = None) -> IPv4Network:
    """A random private /24 that overlaps no route or address of this machine."""
    rng = rng or random.Random()
    used = _networks_in_use()
    for _ in range(500):
        block = rng.choice(PRIVATE_BLOCKS)
        start = int(block.network_address) + rng.randrange(block.num_addresses // 256) * 256
        candidate = IPv4Network((start, 24))
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise NetworkUnavailable("no private /24 is free on this machine")


@contextlib.contextmanager
def _explained() -> Iterator[None]:
    try:
        yield
    except NetworkUnavailable as e:
        raise NetworkUnavailable(f"network namespaces could not be created: {e}") from e


@contextlib.contextmanager
def host_network(hosts: int) -> Iterator[HostNetwork]:
    """Build the bridge and ``hosts`` hosts; tear all of it down on the way out."""
    tag = "cq" + secrets.token_hex(3)  # unique per network; with the suffixes below names stay short
    with _explained():
        net = HostNetwork(bridge=f"{tag}br", subnet=free_subnet())
    try:
        with _explained():
            _build(net, tag, hosts)
        yield net
    except BaseException:
        net.close()
        raise
    leftovers = net.close()
    if leftovers:
        raise NetworkUnavailable(f"the test network was not fully removed: {'; '.join(leftovers)}")


def _build(net: HostNetwork, tag: str, hosts: int) -> None:
    prefix = net.subnet.prefixlen
    names = [(f"{tag}-h{i}", f"{tag}h{i}", f"{tag}h{i}n") for i in range(1, hosts + 1)]
    assert all(len(link) <= IFNAMSIZ for _, *links in names for link in links)
    for ns, _, _ in names:
        ip("netns", "add", ns)
        net.namespaces.append(ns)
    ip("link", "add", "name", net.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    net.bridge_created = True
    # A fixed address: a bridge left to pick its ports' lowest MAC changes it as ports come and go,
    # and the hosts' ARP entries for the bridge address would go stale.
    mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
    ip("link", "set", net.bridge, "address", mac)
    ip("addr", "add", f"{net.bridge_address}/{prefix}", "dev", net.bridge)
    ip("link", "set", net.bridge, "up")
    for i, (ns, port_link, host_link) in enumerate(names, 1):
        address = str(net.subnet.network_address + 1 + i)
        ip("link", "add", port_link, "type", "veth", "peer", "name", host_link, "netns", ns)
        net.port_links.append(port_link)
        ip("link", "set", port_link, "master", net.bridge)
        ip("link", "set", port_link, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{address}/{prefix}", "dev", host_link)
        ip("-n", ns, "link", "set", host_link, "up")
        net.hosts.append(Host(namespace=ns, address=address, port_link=port_link))
