"""A Redis Sentinel group of real Valkey processes on loopback: a durable primary, replicas, and three
sentinels that fail over within about two seconds of losing the primary.

Data nodes take an ACL user (``app``) with a password, and the sentinels a password of their own, so the
credentials of a ``redis+sentinel://`` URL are exercised end to end; the default user may only PING, which
is what the readiness check of ``start_valkey`` sends.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cropq_cli.localstack import ManagedProcess, free_port, start_valkey, valkey_binary, wait_until

MASTER_NAME = "cropq"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 4000
QUORUM = 2
SENTINELS = 3


@dataclass
class SentinelGroup:
    master_name: str
    username: str
    password: str
    sentinel_password: str
    nodes: dict[int, ManagedProcess]  # data nodes by port; the first one started as the primary
    sentinels: dict[int, ManagedProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return (
            f"redis+sentinel://{self.username}:{self.password}@{hosts}/{self.master_name}/0"
            f"?sentinel_password={self.sentinel_password}"
        )

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            "127.0.0.1", port, password=self.sentinel_password, socket_timeout=2, decode_responses=True
        )

    def node(self, port: int) -> redis.Redis:
        """A direct client to one data node (bypassing the sentinels)."""
        return redis.Redis(
            "127.0.0.1",
            port,
            username=self.username,
            password=self.password,
            socket_timeout=2,
            decode_responses=True,
        )

    def primary_port(self) -> int:
        """The primary as a majority of live sentinels names it (any sentinel may lag a moment)."""
        votes: dict[int, int] = {}
        for port, proc in self.sentinels.items():
            if not proc.alive():
                continue
            with self.sentinel(port) as s:
                addr = s.sentinel_get_master_addr_by_name(self.master_name)
            if addr:
                votes[int(addr[1])] = votes.get(int(addr[1]), 0) + 1
        best = max(votes, key=lambda p: votes[p], default=0)
        if votes.get(best, 0) < QUORUM:
            raise LookupError(f"the sentinels do not agree on a primary: {votes}")
        return best

    def settled(self, primary: int, replicas: int) -> bool:
        """Every sentinel names ``primary``, knows the other sentinels and sees ``replicas`` healthy replicas
        of it, and the primary has them all attached."""
        for port in self.sentinels:
            with self.sentinel(port) as s:
                addr = s.sentinel_get_master_addr_by_name(self.master_name)
                if not addr or int(addr[1]) != primary:
                    return False
                if len(s.sentinel_sentinels(self.master_name)) < len(self.sentinels) - 1:
                    return False
                healthy = [
                    r
                    for r in s.sentinel_slaves(self.master_name)
                    if r.get("is_slave") and not r.get("is_sdown") and not r.get("is_odown")
                ]
                if len(healthy) < replicas:
                    return False
        with self.node(primary) as p:
            info = p.info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        attached = sum(r.get("state") == "online" for r in online)
        return bool(info.get("role") == "master" and attached >= replicas)

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.nodes.values()]:
            proc.stop()


def _node_args(username: str, password: str) -> list[str]:
    return [
        *("--user", "default", "on", "nopass", "-@all", "+ping"),
        *("--user", username, "on", f">{password}", "~*", "&*", "+@all"),
        "--masteruser",
        username,
        "--masterauth",
        password,
        # Replicas sync at once, not after the default five-second wait for more of them.
        "--repl-diskless-sync-delay",
        "0",
    ]


def _sentinel_config(group: SentinelGroup, port: int, primary: int, data_dir: Path) -> str:
    name = group.master_name
    return "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            f'dir "{data_dir}"',
            f"requirepass {group.sentinel_password}",
            f"sentinel sentinel-pass {group.sentinel_password}",
            f"sentinel monitor {name} 127.0.0.1 {primary} {QUORUM}",
            f"sentinel auth-user {name} {group.username}",
            f"sentinel auth-pass {name} {group.password}",
            f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {name} 2",
            "",
        ]
    )


def start_sentinel_group(workdir: Path, replicas: int = 2, timeout: float = 30) -> SentinelGroup:
    """Start the group and wait until it is ready to fail over (every sentinel sees every replica)."""
    group = SentinelGroup(
        master_name=MASTER_NAME,
        username="app",
        password=secrets.token_hex(8),
        sentinel_password=secrets.token_hex(8),
        nodes={},
    )
    try:
        args = _node_args(group.username, group.password)
        primary = free_port()
        group.nodes[primary] = start_valkey(workdir / "primary", primary, durable=True, extra_args=args)
        for i in range(replicas):
            port = free_port()
            follow = ("--replicaof", "127.0.0.1", str(primary))
            group.nodes[port] = start_valkey(
                workdir / f"replica-{i}", port, durable=False, extra_args=(*args, *follow)
            )
        for i in range(SENTINELS):
            port, data_dir = free_port(), (workdir / f"sentinel-{i}").resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            config = data_dir / "sentinel.conf"  # the sentinel rewrites it with what it learns
            config.write_text(_sentinel_config(group, port, primary, data_dir))
            group.sentinels[port] = ManagedProcess(
                f"sentinel-{i}", [valkey_binary(), str(config), "--sentinel"], data_dir / "sentinel.log"
            )
        procs = [*group.nodes.values(), *group.sentinels.values()]
        wait_until(lambda: group.settled(primary, replicas), timeout, "Sentinel group", procs)
    except BaseException:
        group.stop()
        raise
    return group
