"""A local Redis Cluster of 3 masters and 3 replicas, from the system's redis-server (7.x).

For tests (``tests/cluster_fixtures.py``) and trying streamrec on a cluster by hand::

    python scripts/redis_cluster.py start /tmp/rc      # prints the URL, e.g. redis://127.0.0.1:31001
    STREAMREC_REDIS_URL=redis://127.0.0.1:31001 streamrec demo
    python scripts/redis_cluster.py stop /tmp/rc       # kills every node

Each node runs ``redis-server --port P --bind 127.0.0.1 --cluster-enabled yes
--cluster-config-file nodes-P.conf --dir DIR --save "" --appendonly no --daemonize yes``;
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`` joins them. A low
``cluster-node-timeout`` (1 s) makes a replica take over a dead master within seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

__all__ = ["LocalCluster", "start_cluster"]

MASTERS = 3
REPLICAS_PER_MASTER = 1
NODE_TIMEOUT_MS = 1000
#: Redis Cluster talks between nodes on port + 10000.
BUS_OFFSET = 10000


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """``n`` ports whose cluster-bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + BUS_OFFSET < 65536 and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _wait(check: object, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"redis cluster: {what} not reached in {timeout_s:.0f} s")


@dataclass
class LocalCluster:
    """A running local cluster: its node ports (masters first at creation) and folder."""

    ports: list[int]
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def pid(self, port: int) -> int | None:
        path = self.directory / f"redis-{port}.pid"
        return int(path.read_text()) if path.exists() else None

    def start_node(self, port: int) -> None:
        """Start (or restart, with its cluster config: it rejoins) the node on ``port``."""
        subprocess.run([
            "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(self.directory),
            "--save", "", "--appendonly", "no", "--daemonize", "yes",
            "--pidfile", str(self.directory / f"redis-{port}.pid"),
            "--logfile", str(self.directory / f"redis-{port}.log"),
        ], check=True)
        _wait(lambda: self.node(port).ping(), f"node {port} answering", 10)

    def kill(self, port: int, sig: signal.Signals = signal.SIGKILL) -> None:
        pid = self.pid(port)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        (self.directory / f"redis-{port}.pid").unlink(missing_ok=True)

    def masters(self) -> list[int]:
        """Ports of the masters now serving slots (as a live node sees it)."""
        for port in self.ports:
            try:
                nodes = self.node(port).cluster("nodes")
            except redis.RedisError:
                continue
            return sorted(int(address.split(":")[1].split("@")[0])
                          for address, node in nodes.items()
                          if "master" in node["flags"] and node["connected"]
                          and node["slots"] and "fail" not in node["flags"])
        return []

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and every replica is in sync."""

        def ok() -> bool:
            for port in self.ports:
                if self.pid(port) is None:
                    continue
                client = self.node(port)
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and (
                        replication.get("master_link_status") != "up"):
                    return False
            return True

        _wait(ok, "cluster_state:ok", timeout_s)

    def stop(self) -> None:
        """Kill every node (the folder stays, for its logs)."""
        for port in self.ports:
            self.kill(port)


def start_cluster(directory: Path, *, masters: int = MASTERS,
                  replicas: int = REPLICAS_PER_MASTER) -> LocalCluster:
    """Start ``masters`` masters with ``replicas`` replicas each and wait until it serves."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError("redis-server and redis-cli (7.x) are needed: apt install redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(_free_ports(masters * (1 + replicas)), directory)
    try:
        for port in cluster.ports:
            cluster.start_node(port)
        subprocess.run([
            "redis-cli", "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in cluster.ports),
            "--cluster-replicas", str(replicas), "--cluster-yes",
        ], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    (directory / "cluster.json").write_text(json.dumps({"ports": cluster.ports}))
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("directory", type=Path, help="node configs, logs and pid files")
    args = parser.parse_args(argv)
    if args.action == "start":
        print(start_cluster(args.directory).url)
        return 0
    state = args.directory / "cluster.json"
    if not state.exists():
        print(f"no cluster recorded in {args.directory}", file=sys.stderr)
        return 1
    LocalCluster(json.loads(state.read_text())["ports"], args.directory).stop()
    state.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
