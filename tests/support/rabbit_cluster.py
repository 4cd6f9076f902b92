"""A throwaway 3-node RabbitMQ cluster on this machine, next to the system broker.

Each node gets its own node name (``<prefix>1@localhost`` …), AMQP and distribution ports,
data, logs, config, plugins file, pid file and Erlang cookie, all in one temporary folder,
so nothing of the system node (``rabbit@localhost`` on 5672, its data, its cookie) is used
or touched. Nodes 2… join node 1 with ``rabbitmqctl join_cluster``. The cluster's one user
is ``jobstack``/``jobstack`` with every permission on ``/``; it may connect from any address
(worker hosts in network namespaces are not loopback clients).

Tests use :class:`RabbitCluster` as a context manager; ``infra/scripts/rabbitmq-cluster``
keeps one running for a developer (:meth:`RabbitCluster.attach` finds it again).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.support import ports

USER = "jobstack"
PASSWORD = "jobstack"
HOST = "localhost"
#: Where the Debian/Ubuntu package keeps the real scripts: ``/usr/sbin/rabbitmqctl`` is a
#: wrapper that, run as root, switches to the ``rabbitmq`` user and resets HOME, which
#: would hand the CLI the system node's cookie instead of the cluster's.
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
#: rabbitmqctl's own distribution ports (rabbitmq-env's defaults); never give them to a node.
CLI_DIST_PORTS = range(35672, 35683)
STATE_FILE = "cluster.json"
TEMP_PREFIX = "jobstack-rabbit-cluster-"


class ClusterError(RuntimeError):
    """A node did not start, join or answer in time; the message carries its log tail."""


def scripts_dir() -> Path | None:
    """The folder holding the real ``rabbitmq-server`` and ``rabbitmqctl`` scripts."""
    override = os.environ.get("JOBSTACK_RABBITMQ_SCRIPTS")
    if override:
        return Path(override) if (Path(override) / "rabbitmq-server").exists() else None
    if (DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        return DEBIAN_SCRIPTS
    found = shutil.which("rabbitmq-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    return Path(found).resolve().parent if found else None


def free_ports(count: int) -> list[int]:
    """``count`` free TCP ports below the kernel's ephemeral range, so that no outgoing
    connection takes a killed node's port before it restarts."""
    try:
        return ports.free_ports(count, avoid=CLI_DIST_PORTS)
    except RuntimeError as error:
        raise ClusterError(str(error)) from None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def _wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``check`` until true; the seconds it took. Raises :class:`ClusterError`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise ClusterError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@dataclass
class Node:
    """One node's name, ports and folder."""

    name: str
    amqp_port: int
    dist_port: int
    folder: Path

    @property
    def pid_file(self) -> Path:
        return self.folder / "rabbit.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / "log" / f"{self.name}.log"

    @property
    def stdout_file(self) -> Path:
        return self.folder / "stdout.log"

    def pid(self) -> int | None:
        """The node's beam.smp process id, if its pid file names a live process."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def log_tail(self) -> str:
        return (
            f"--- {self.log_file} ---\n{_tail(self.log_file)}\n"
            f"--- {self.stdout_file} ---\n{_tail(self.stdout_file)}"
        )


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count: it is dead, just not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class RabbitCluster:
    """A local RabbitMQ cluster of ``size`` nodes; ``with RabbitCluster() as cluster:``
    starts and clusters them, and leaving the block stops them and removes their folder."""

    def __init__(
        self,
        size: int = 3,
        prefix: str | None = None,
        folder: Path | None = None,
        boot_timeout: float = 60,
        ports: Sequence[int] | None = None,
        owner: int | None = -1,
        config: Sequence[str] = (),
    ) -> None:
        """``prefix`` names the nodes (default ``jsq<pid>n``, unique per test process);
        ``folder`` holds everything (default: a new temporary folder, removed on stop);
        ``ports`` are the AMQP ports (default: free ones); each distribution port is
        chosen free as well; ``owner`` is the process whose death orphans the nodes
        (default: this one; ``None``: nobody's, as the developer script's), for
        :func:`remove_leftovers`; ``config`` are more rabbitmq.conf lines, e.g.
        ``"net_ticktime = 10"`` for a hung node to be declared down within ~10 s, not ~60 s."""
        scripts = scripts_dir()
        if scripts is None:
            raise FileNotFoundError("rabbitmq-server is not installed (no rabbitmq-server)")
        self.scripts = scripts
        self.boot_timeout = boot_timeout
        self.owner = os.getpid() if owner == -1 else owner
        self.config = list(config)
        self._own_folder = folder is None
        self.folder = folder or Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self.folder.mkdir(parents=True, exist_ok=True)
        prefix = prefix or f"jsq{os.getpid()}n"
        amqp = list(ports) if ports else free_ports(size)
        dist = [p for p in free_ports(size + len(amqp)) if p not in amqp][:size]
        self.nodes: dict[str, Node] = {}
        for index in range(size):
            name = f"{prefix}{index + 1}@{HOST}"
            self.nodes[name] = Node(name, amqp[index], dist[index], self.folder / name)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        # Frozen nodes do not answer the CLI: queries go to another node.
        self._frozen: set[str] = set()
        #: Seconds each phase took, for reports: boot, join, kill, restart.
        self.timings: dict[str, float] = {}

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start_all(self) -> None:
        """Boot every node in parallel (Erlang boots take seconds each), then join nodes
        2… to node 1 one at a time (concurrent joins race on the cluster's schema)."""
        self._write_shared_files()
        # Written first, so that remove_leftovers finds the nodes of a run killed mid-boot.
        self._save_state()
        started = time.monotonic()
        for node in self.nodes.values():
            self._write_node_files(node)
            self._launch(node)
        self._parallel(self._await_boot, list(self.nodes.values()))
        self.timings["boot"] = time.monotonic() - started
        first, *others = self.node_names
        joined = time.monotonic()
        for name in others:
            self.rabbitmqctl(name, "stop_app")
            self.rabbitmqctl(name, "join_cluster", first)
            self.rabbitmqctl(name, "start_app")
        _wait(
            lambda: set(self.running_nodes(first)) == set(self.node_names),
            self.boot_timeout,
            f"{len(self.nodes)} running nodes in the cluster",
        )
        self.timings["join"] = time.monotonic() - joined
        self.timings["start_all"] = time.monotonic() - started

    def stop(self) -> None:
        """SIGKILL every node (their data is thrown away, so there is nothing to shut down
        cleanly) and remove the folder if this object made it."""
        for node in self.nodes.values():
            self._kill_process(node)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- addresses ---------------------------------------------------------------------

    @property
    def node_names(self) -> list[str]:
        """The nodes' names, node 1 first."""
        return list(self.nodes)

    def amqp_port(self, node: str) -> int:
        return self.nodes[node].amqp_port

    def url(self, node: str, host: str = "127.0.0.1", **query: str | int) -> str:
        """An amqp:// URL of ``node`` for user jobstack on vhost ``/``, reached at ``host``
        (a worker host in a network namespace gives its root-side address)."""
        params = "&".join(f"{key}={value}" for key, value in query.items())
        base = f"amqp://{USER}:{PASSWORD}@{host}:{self.amqp_port(node)}/%2F"
        return f"{base}?{params}" if params else base

    def urls(self, host: str = "127.0.0.1", **query: str | int) -> list[str]:
        """Every node's URL, node 1 first."""
        return [self.url(name, host, **query) for name in self.node_names]

    def url_list(self, host: str = "127.0.0.1", **query: str | int) -> str:
        """Every node's URL joined with ``;``."""
        return ";".join(self.urls(host, **query))

    # -- inspection --------------------------------------------------------------------

    def rabbitmqctl(
        self, node: str, *args: str, timeout: float = 60, tool: str = "rabbitmqctl"
    ) -> str:
        """Run a RabbitMQ CLI ``tool`` against ``node``; its stdout. Raises
        :class:`ClusterError` with its output when it fails."""
        argv = [str(self.scripts / tool), "-n", node, *args]
        try:
            done = subprocess.run(
                argv,
                env=self._env(self.nodes[node]),
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise ClusterError(f"{' '.join(argv)} timed out after {timeout}s") from error
        if done.returncode != 0:
            raise ClusterError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def running_nodes(self, via: str | None = None) -> list[str]:
        """The cluster's running nodes, as node ``via`` (default: any live node) sees them."""
        status = json.loads(
            self.rabbitmqctl(via or self.any_alive(), "cluster_status", "--formatter", "json")
        )
        return list(status["running_nodes"])

    def queues(self, vhost: str = "/", via: str | None = None) -> list[dict[str, Any]]:
        """``list_queues``' rows of ``vhost`` (name, type, leader, members, online, messages …)."""
        columns = ["name", "type", "leader", "members", "online"]
        columns += ["messages", "messages_ready", "messages_unacknowledged"]
        text = self.rabbitmqctl(
            via or self.any_alive(), "list_queues", "-p", vhost, "--formatter", "json", *columns
        )
        return [dict(row) for row in json.loads(text)]

    def queue_info(self, queue: str, vhost: str = "/", via: str | None = None) -> dict[str, Any]:
        """``list_queues``' row of ``queue``."""
        for row in self.queues(vhost, via):
            if row["name"] == queue:
                return row
        raise ClusterError(f"no queue {queue!r} in vhost {vhost!r}")

    def leader_of(self, queue: str, vhost: str = "/") -> str:
        """The node that leads quorum queue ``queue`` now."""
        leader = self.queue_info(queue, vhost).get("leader")
        if not leader or leader not in self.nodes:
            raise ClusterError(f"quorum queue {queue!r} has no leader now ({leader!r})")
        return str(leader)

    def members(self, queue: str, vhost: str = "/") -> list[str]:
        """The nodes holding a replica of quorum queue ``queue`` (up or down)."""
        return list(self.queue_info(queue, vhost)["members"])

    def online(self, queue: str, vhost: str = "/") -> list[str]:
        """The members of quorum queue ``queue`` that run now."""
        return list(self.queue_info(queue, vhost)["online"])

    def alive(self, node: str) -> bool:
        """Whether ``node``'s OS process runs."""
        return self.nodes[node].pid() is not None

    # -- failures ----------------------------------------------------------------------

    def kill(self, node: str, timeout: float = 30) -> None:
        """SIGKILL ``node``'s beam.smp, as a crash or power loss would, and wait until the
        process is gone and the other nodes no longer count it as running."""
        started = time.monotonic()
        pid = self.nodes[node].pid()
        if pid is None:
            raise ClusterError(f"{node} is not running")
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _alive(pid), timeout, f"{node} (pid {pid}) to die")
        self._kill_process(self.nodes[node])
        survivors = [
            name
            for name in self.node_names
            if name != node and name not in self._frozen and self.alive(name)
        ]
        if survivors:
            _wait(
                lambda: node not in self.running_nodes(survivors[0]),
                timeout,
                f"{survivors[0]} to notice that {node} is gone",
            )
        self.timings["kill"] = time.monotonic() - started

    def freeze(self, node: str) -> None:
        """SIGSTOP ``node``: it hangs with its sockets open, so that its peers learn of
        its loss only from missed ticks (as with a host whose network or power fails)."""
        pid = self.nodes[node].pid()
        if pid is None:
            raise ClusterError(f"{node} is not running")
        os.kill(pid, signal.SIGSTOP)
        self._frozen.add(node)

    def thaw(self, node: str, vhost: str = "/") -> None:
        """SIGCONT a frozen ``node`` and wait until the cluster is whole again (if the
        others had declared it down, autoheal restarts it first: see ``_write_node_files``)."""
        pid = self.nodes[node].pid()
        if pid is None:
            raise ClusterError(f"{node} is not running")
        started = time.monotonic()
        os.kill(pid, signal.SIGCONT)
        self._frozen.discard(node)
        self.wait_whole(vhost)
        self.timings["thaw"] = time.monotonic() - started

    def start(self, node: str, vhost: str = "/") -> None:
        """Start a killed ``node`` again and wait until it has rejoined: every node runs
        in the cluster and every quorum queue of ``vhost`` counts all its members online."""
        if self.alive(node):
            raise ClusterError(f"{node} is running already")
        started = time.monotonic()
        self._launch(self.nodes[node])
        self._await_boot(self.nodes[node])
        self.wait_whole(vhost)
        self.timings["restart"] = time.monotonic() - started

    def wait_whole(self, vhost: str = "/") -> None:
        """Wait until every node sees every node running (no partition) and every quorum
        queue of ``vhost`` counts all its members online."""

        def whole(name: str) -> bool:
            try:
                return set(self.running_nodes(name)) == set(self.node_names)
            except ClusterError:  # a node autoheal is restarting does not answer
                return False

        _wait(
            lambda: all(whole(name) for name in self.node_names),
            self.boot_timeout,
            f"every node of {self.node_names} to see all of them running",
        )
        _wait(
            lambda: self._quorum_queues_whole(vhost),
            self.boot_timeout,
            "every quorum queue's members online",
            interval=0.5,
        )

    # -- internals ---------------------------------------------------------------------

    def _quorum_queues_whole(self, vhost: str) -> bool:
        return all(
            set(row["members"]) <= set(row["online"])
            for row in self.queues(vhost)
            if row["type"] == "quorum"
        )

    def any_alive(self) -> str:
        """A node whose process runs and is not frozen (node 1 first), to ask the cluster
        through."""
        for name in self.node_names:
            if name not in self._frozen and self.alive(name):
                return name
        raise ClusterError("no node of the cluster runs")

    def _env(self, node: Node) -> dict[str, str]:
        # Nothing RabbitMQ- or Erlang-specific from the caller's environment may leak in
        # (a RABBITMQ_NODENAME or ERL_FLAGS meant for the system node, say).
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        folder = node.folder
        env.update(
            # The cluster's own cookie: $HOME/.erlang.cookie serves server and CLI alike.
            HOME=str(self.folder),
            LC_ALL="C.UTF-8",
            # Our empty env file instead of /etc/rabbitmq/rabbitmq-env.conf, which names
            # the system node and pins its distribution to 127.0.0.1 through ERL_FLAGS.
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_PORT=str(node.amqp_port),
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_CONFIG_FILE=str(folder / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(folder / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(folder / "log"),
            RABBITMQ_PID_FILE=str(node.pid_file),
            # Inter-node traffic stays on loopback: partitioning a worker host's link must
            # never split the cluster itself.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _write_shared_files(self) -> None:
        cookie = self.folder / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text("".join(random.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=20)))
            # Erlang refuses a cookie file that others may read.
            cookie.chmod(0o400)
        (self.folder / "rabbitmq-env.conf").write_text("# empty: see rabbit_cluster.py\n")
        # No plugins: the management (15672) and prometheus (15692) listeners would clash
        # with the system node's and with each other.
        (self.folder / "enabled_plugins").write_text("[].\n")

    def _write_node_files(self, node: Node) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        (node.folder / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    # All interfaces: worker hosts in network namespaces connect through
                    # their veth's root-side address.
                    f"listeners.tcp.default = {node.amqp_port}",
                    f"default_user = {USER}",
                    f"default_pass = {PASSWORD}",
                    "default_vhost = /",
                    "default_permissions.configure = .*",
                    "default_permissions.read = .*",
                    "default_permissions.write = .*",
                    "default_user_tags.administrator = true",
                    "loopback_users = none",
                    "log.file.level = info",
                    "log.console = false",
                    # As infra/rabbitmq/rabbitmq.conf, which jobstack relies on.
                    "consumer_timeout = 1800000",
                    "vm_memory_high_watermark.relative = 0.6",
                    # A node that hung past net_ticktime (SIGSTOP, then SIGCONT) comes back
                    # to a partitioned cluster. Measured on 3.10.8: with the default
                    # (ignore), and with pause_minority too (the node is Erlang-connected
                    # again, so not "in a minority"), it stays split for minutes; autoheal
                    # restarts it and the cluster is whole within ~2 s. A later line in
                    # ``config`` overrides this one.
                    "cluster_partition_handling = autoheal",
                    *self.config,
                    "",
                ]
            )
        )

    def _launch(self, node: Node) -> None:
        node.pid_file.unlink(missing_ok=True)
        with node.stdout_file.open("ab") as out:
            # Its own session, so that the nodes outlive a developer script's exit and a
            # Ctrl-C in a test run reaches pytest only (which then stops them).
            self._processes[node.name] = subprocess.Popen(
                [str(self.scripts / "rabbitmq-server")],
                env=self._env(node),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _await_boot(self, node: Node) -> None:
        process = self._processes.get(node.name)

        def exited() -> bool:
            return process is not None and process.poll() is not None

        try:
            _wait(
                lambda: node.pid() is not None or exited(),
                self.boot_timeout,
                f"{node.name} to write its pid file",
            )
            if exited():
                raise ClusterError(f"{node.name} exited while booting")
            # await_startup returns once the node has booted completely (or fails).
            self.rabbitmqctl(
                node.name,
                "await_startup",
                "--timeout",
                str(int(self.boot_timeout)),
                timeout=self.boot_timeout + 15,
            )
        except ClusterError as error:
            raise ClusterError(f"{node.name} did not start: {error}\n{node.log_tail()}") from None

    def _kill_process(self, node: Node) -> None:
        self._frozen.discard(node.name)
        pid = node.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process = self._processes.pop(node.name, None)
        if process is not None:
            # The wrapper shell and erl_child_setup share the node's process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        if pid is not None:
            _wait(lambda: not _alive(pid), 30, f"{node.name} (pid {pid}) to die")

    def _parallel(self, action: Callable[[Node], None], nodes: Iterable[Node]) -> None:
        errors: list[BaseException] = []

        def run(node: Node) -> None:
            try:
                action(node)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    # -- a cluster kept across processes (the developer script) ------------------------

    def _save_state(self) -> None:
        state = {
            "owner": self.owner,
            "nodes": {
                name: {"amqp_port": node.amqp_port, "dist_port": node.dist_port}
                for name, node in self.nodes.items()
            },
        }
        (self.folder / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, folder: Path) -> RabbitCluster:
        """The cluster whose folder is ``folder`` (started by another process); stopping
        it kills its nodes but keeps the folder."""
        state = json.loads((folder / STATE_FILE).read_text())
        cluster = cls.__new__(cls)
        scripts = scripts_dir()
        if scripts is None:
            raise FileNotFoundError("rabbitmq-server is not installed")
        cluster.scripts = scripts
        cluster.boot_timeout = 60
        cluster._own_folder = False
        cluster.folder = folder
        cluster.owner = state["owner"]
        cluster.config = []
        cluster.nodes = {
            name: Node(name, ports["amqp_port"], ports["dist_port"], folder / name)
            for name, ports in state["nodes"].items()
        }
        cluster._processes = {}
        cluster._frozen = set()
        cluster.timings = {}
        return cluster


def _runs_node(pid: int, node: str) -> bool:
    """Whether process ``pid`` is the node ``node`` (its environment names it), so that a
    reused pid never gets another program killed."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"RABBITMQ_NODENAME={node}".encode() in environ


def remove_leftovers(root: Path | None = None) -> list[str]:
    """Kill the nodes of clusters in ``root`` (default: the temporary folder) whose owner
    process has died without stopping them (a test run killed with SIGKILL), and remove
    their folders; the names of the nodes killed. Clusters of live processes are left."""
    killed: list[str] = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        owner = state.get("owner")
        if owner is None or _alive(owner):
            continue
        for name in state["nodes"]:
            pid = Node(name, 0, 0, folder / name).pid()
            if pid is not None and _runs_node(pid, name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(name)
        shutil.rmtree(folder, ignore_errors=True)
    return killed
