"""A multi-node Ray cluster of real `ray start` processes, on loopback only.

The head (`ray start --head --block`) runs in a network namespace of its own with only
`lo` up (`unshare -n`): Ray's servers listen on every interface, and a test's servers
stay on loopback. Every other node (`ray start --address=127.0.0.1:PORT --block`) and
every batchrun driver joins that namespace (`nsenter --net=/proc/HEAD/ns/net`). Each
node is a process group of its own, so a test kills one node (its `ray start`, raylet
and workers) with one SIGKILL, as a machine dies. Token authentication is on, with a
token made for the cluster, so no test reads or writes ~/.ray; and its own temp dir,
so the machine's /tmp/ray (its cluster registration, session folders) stays untouched.

Worker nodes run a bare interpreter (`bare_python`): Ray and the dependencies, but not
batchrun, as on a machine where only those were installed; a run ships batchrun to them
(runtime_env py_modules). batchrun runs outside the repository (`cwd`), since Ray adds
the driver's current directory to every worker's sys.path.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from batchrun.execution.settings import HEALTH_CHECK_ENV
from tests.conftest import wait_for

RAY_CLI = str(Path(sys.executable).with_name("ray"))
"""The head runs this environment's `ray`."""
_CLEARED = ("RAY_ADDRESS", "BATCHRUN_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE",
            "RAY_AUTH_TOKEN_PATH")
_NODES_ALIVE = """
import sys, time, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) != int(sys.argv[2]):
    assert time.monotonic() < deadline, ray.nodes()
    time.sleep(0.2)
"""


def bare_python(directory: Path) -> str:
    """A virtual environment that sees this one's site-packages but not batchrun: the
    folder is listed in a .pth file, so the .pth files in it (the editable install's
    finder among them) are not processed. Returns its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    python = directory / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print("
                              "sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "shared-site-packages.pth").write_text("\n".join(sorted(shared)) + "\n")
    return str(python)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoopbackCluster:
    """A running head, the nodes added to it, and a way to run commands beside them."""

    def __init__(self, head: subprocess.Popen[bytes], port: int, env: dict[str, str],
                 node_python: str) -> None:
        self.head, self.port, self.env = head, port, env
        self.node_python = node_python
        """The interpreter of the worker nodes (see `bare_python`)."""
        self.nodes: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def inside(self, *command: str | Path) -> list[str]:
        """`command` run in the cluster's network namespace."""
        return ["nsenter", f"--net=/proc/{self.head.pid}/ns/net", *map(str, command)]

    def add_node(self, ip: str = "127.0.0.1", cpus: int = 1) -> subprocess.Popen[bytes]:
        """Start a worker node (without waiting for it: see `wait_for_nodes`)."""
        node = subprocess.Popen(
            self.inside(self.node_python, "-m", "ray.scripts.scripts", "start", "--block",
                        f"--address={self.address}", f"--num-cpus={cpus}",
                        f"--node-ip-address={ip}", "--disable-usage-stats"),
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=Path(self.node_python).parents[1])
        self.nodes.append(node)
        return node

    def worker_node(self) -> subprocess.Popen[bytes]:
        """A live worker node (one is started if none is), once Ray counts exactly the
        live nodes alive (a node killed a moment ago is dead to it too)."""
        live = [node for node in self.nodes if node.poll() is None]
        if not live:
            live.append(self.add_node())
        self.wait_for_nodes(1 + len(live))
        return live[0]

    def kill_node(self, node: subprocess.Popen[bytes]) -> None:
        """SIGKILL every process of the node, as a machine dies: its session, since Ray
        puts each worker in a process group of its own (a worker that outlives its
        raylet goes on running its batch, as on a node cut off by a network split)."""
        kill_session(node)
        node.wait(timeout=60)

    def wait_for_nodes(self, count: int) -> None:
        """Until exactly `count` nodes are alive (a killed one counts once Ray says so)."""
        subprocess.run(self.inside(sys.executable, "-c", _NODES_ALIVE, self.address, str(count)),
                       env=self.env, check=True, capture_output=True, timeout=180)

    def batchrun(self, *args: str | Path, cwd: Path, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
        """`batchrun ARGS --address 127.0.0.1:PORT` started in the namespace, in `cwd`,
        output piped."""
        return subprocess.Popen(
            self.inside(sys.executable, "-m", "batchrun", *args, "--address", self.address),
            env={**self.env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True, cwd=cwd)

    def stop(self) -> None:
        for process in [*self.nodes, self.head]:
            kill_session(process)
        for process in [*self.nodes, self.head]:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)


def kill_session(leader: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of the session `leader` started (start_new_session=True)."""
    for _ in range(2):  # once more for a process started while the first pass ran
        for entry in Path("/proc").iterdir():
            with suppress(ValueError, OSError):
                if os.getsid(int(entry.name)) == leader.pid:
                    os.kill(int(entry.name), signal.SIGKILL)


def _answers(cluster: LoopbackCluster) -> bool:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {cluster.port}), 1).close()"
    done = subprocess.run(cluster.inside(sys.executable, "-c", probe), capture_output=True,
                          timeout=30, check=False)
    return done.returncode == 0


@contextmanager
def loopback_cluster(workers: int = 1, cpus: int = 1) -> Iterator[LoopbackCluster]:
    """A head of `cpus` CPUs and `workers` worker nodes of `cpus` CPUs each, all alive,
    with batchrun's health-check settings (a dead node is noticed in ~3 s, not 20-70 s);
    stopped, node by node and then the head, on the way out."""
    port, temp_dir = free_port(), tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**{k: v for k, v in os.environ.items() if k not in _CLEARED},
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), **HEALTH_CHECK_ENV}
    head = subprocess.Popen(
        ["unshare", "-n", "sh", "-c",
         f"ip link set lo up && exec {RAY_CLI} start --head --block --port={port}"
         f" --num-cpus={cpus} --node-ip-address=127.0.0.1 --include-dashboard=false"
         f" --disable-usage-stats --temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cluster = LoopbackCluster(head, port, env, bare_python(Path(temp_dir) / "bare"))
    try:
        wait_for(lambda: _answers(cluster), timeout=120)
        for _ in range(workers):
            cluster.add_node(cpus=cpus)
        cluster.wait_for_nodes(1 + workers)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
