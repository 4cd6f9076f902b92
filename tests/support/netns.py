"""A second "host" on this machine: a network namespace wired to the root one by veth pairs.

A :class:`WorkerHost` has two links to the root namespace, so that a test can cut the
broker path alone or the host off from everything:

* the broker link, ``10.231.N.1`` (root side) ↔ ``10.231.N.2`` (inside): processes in the
  host reach the cluster's nodes at ``10.231.N.1:<amqp port>`` (the nodes listen on every
  interface, and an address of the root namespace is one of them);
* the services link, ``10.232.N.1`` ↔ ``10.232.N.2``: services that listen on loopback
  only (PostgreSQL at 127.0.0.1:5432) are forwarded there by :meth:`WorkerHost.forward`,
  a small TCP relay in the test process.

Partitions take the root side of a link down: packets the host sends are dropped by the
veth, and nothing tells either end, as when a switch or cable fails; the broker notices
through missed heartbeats, the host's TCP stack through retransmission timeouts.

Needs root (``ip netns`` needs CAP_SYS_ADMIN and CAP_NET_ADMIN).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

BROKER_NET = "10.231"
SERVICES_NET = "10.232"
#: Host numbers N (the third octet of both links); 0 and 255 are left out.
HOST_NUMBERS = range(1, 255)


class NetnsError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str, namespace: str | None = None) -> str:
    """Run ``ip args`` (inside ``namespace`` if given); its stdout."""
    argv = ["ip", *args] if namespace is None else ["ip", "-n", namespace, *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def netns_available() -> tuple[bool, str]:
    """Whether this process may make network namespaces; if not, why not."""
    if shutil.which("ip") is None:
        return False, "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return False, "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    probe = f"js-probe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except NetnsError as error:
        return False, f"ip netns add fails: {error}"
    with contextlib.suppress(NetnsError):
        ip("netns", "del", probe)
    return True, ""


def _taken_numbers() -> set[int]:
    """Host numbers whose namespace or root-side link exists (another run's, maybe)."""
    # `ip -o link` lines read "7: js-h1b@if6: <BROADCAST,…"; `ip netns list` lines
    # "js-host1 (id: 0)".
    links = {line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines()}
    spaces = {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}
    return {
        n for n in HOST_NUMBERS if f"js-host{n}" in spaces or {f"js-h{n}b", f"js-h{n}s"} & links
    }


class Forwarder:
    """A TCP relay listening on ``listen`` and copying bytes both ways to ``target``."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.address: tuple[str, int] = self.server.getsockname()[:2]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"forward {listen}")
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # Half-close so the other direction finishes its last bytes, then forget both.
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, set()
        # close() alone leaves the socket bound while a thread is blocked in accept() on
        # it (the call holds it): the next Forwarder on the same address then fails with
        # "Address already in use". shutdown() wakes accept() first.
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self._thread.join(5)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class WorkerHost:
    """A network namespace ``js-hostN`` standing for one worker machine;
    ``with WorkerHost() as host:`` makes it, and leaving the block kills what runs in it
    and removes it with its links."""

    def __init__(self, number: int | None = None) -> None:
        """``number`` is N (default: the first one free on this machine)."""
        self._requested = number
        self.number = 0
        self.namespace = ""
        self._forwarders: list[Forwarder] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self.partitioned: set[str] = set()

    # -- addresses ---------------------------------------------------------------------

    @property
    def broker_address(self) -> str:
        """Where processes in the host reach the broker nodes (root side of the link)."""
        return f"{BROKER_NET}.{self.number}.1"

    @property
    def services_address(self) -> str:
        """Where processes in the host reach :meth:`forward`'ed services."""
        return f"{SERVICES_NET}.{self.number}.1"

    @property
    def address(self) -> str:
        """The host's own address on the broker link (what the broker sees as the peer)."""
        return f"{BROKER_NET}.{self.number}.2"

    def _link(self, kind: str) -> str:
        # Interface names are at most 15 characters: "js-h254b" fits.
        return f"js-h{self.number}{kind}"

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()

    def create(self) -> None:
        """Make the namespace, bring its loopback up and wire both links."""
        taken = _taken_numbers()
        if self._requested is not None:
            if self._requested in taken:
                raise NetnsError(f"js-host{self._requested} or its links exist already")
            candidates = [self._requested]
        else:
            candidates = [n for n in HOST_NUMBERS if n not in taken]
        for number in candidates:
            # `ip netns add` fails if the name exists: it is the lock between test
            # processes that pick the same free number at once.
            try:
                ip("netns", "add", f"js-host{number}")
            except NetnsError:
                if self._requested is not None:
                    raise
                continue
            self.number, self.namespace = number, f"js-host{number}"
            break
        else:
            raise NetnsError("no free js-hostN number")
        ip("link", "set", "lo", "up", namespace=self.namespace)
        for kind, net in (("b", BROKER_NET), ("s", SERVICES_NET)):
            outside, inside = self._link(kind), f"{self._link(kind)}i"
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", self.namespace)
            ip("addr", "add", f"{net}.{self.number}.1/30", "dev", outside)
            ip("addr", "add", f"{net}.{self.number}.2/30", "dev", inside, namespace=self.namespace)
            ip("link", "set", outside, "up")
            ip("link", "set", inside, "up", namespace=self.namespace)

    def destroy(self) -> None:
        """Kill the processes started here, stop the forwarders, delete namespace and links."""
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self._processes.clear()
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders.clear()
        if not self.namespace:
            return
        # Whatever else runs inside (started through argv() by the caller) would keep the
        # namespace alive after `ip netns del`; the namespace is ours, so is what runs in it.
        with contextlib.suppress(NetnsError):
            for pid in ip("netns", "pids", self.namespace).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        # Deleting a veth end deletes its peer; the namespace goes once nothing runs in it.
        for kind in ("b", "s"):
            with contextlib.suppress(NetnsError):
                ip("link", "del", self._link(kind))
        with contextlib.suppress(NetnsError):
            ip("netns", "del", self.namespace)
        self.namespace = ""

    # -- running things in the host ----------------------------------------------------

    def argv(self, *command: str) -> list[str]:
        """``command`` prefixed so that it runs inside the host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``command`` inside the host in its own process group; it is killed when
        the host is destroyed. ``kwargs`` go to :class:`subprocess.Popen`."""
        kwargs.setdefault("start_new_session", True)
        process: subprocess.Popen[Any] = subprocess.Popen(self.argv(*command), **kwargs)
        self._processes.append(process)
        return process

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the host to completion; its output, whatever its status."""
        return subprocess.run(
            self.argv(*command), capture_output=True, text=True, timeout=timeout, check=False
        )

    def forward(self, port: int, target_host: str = "127.0.0.1", target_port: int = 0) -> str:
        """Make ``target_host:target_port`` (default: the same port on loopback) reachable
        from the host at ``services_address:port``; that ``host:port``."""
        forwarder = Forwarder((self.services_address, port), (target_host, target_port or port))
        self._forwarders.append(forwarder)
        return f"{self.services_address}:{port}"

    # -- partitions --------------------------------------------------------------------

    def partition(self, broker: bool = True, services: bool = True) -> None:
        """Cut the host off: from the broker, from the forwarded services, or (default)
        from both, as a host whose network fails is. Connections stay open, silent."""
        for kind, cut in (("b", broker), ("s", services)):
            if cut:
                ip("link", "set", self._link(kind), "down")
                self.partitioned.add(kind)

    def heal(self) -> None:
        """Bring every cut link back up; connections that did not time out carry on."""
        for kind in sorted(self.partitioned):
            ip("link", "set", self._link(kind), "up")
        self.partitioned.clear()


def leftover_hosts() -> list[str]:
    """``js-hostN`` namespaces on this machine (left by a run that was killed)."""
    names = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    return [name for name in names if name.startswith("js-host")]


def remove_leftover(namespace: str) -> None:
    """Delete a leftover ``js-hostN`` namespace, its links, and the processes inside it."""
    if not namespace.startswith("js-host"):
        raise ValueError(f"{namespace} is not a WorkerHost namespace")
    pids = ip("netns", "pids", namespace).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    number = namespace.removeprefix("js-host")
    for kind in ("b", "s"):
        with contextlib.suppress(NetnsError):
            ip("link", "del", f"js-h{number}{kind}")
    with contextlib.suppress(NetnsError):
        ip("netns", "del", namespace)
