"""Delivering webhooks to real local servers: redirects are not followed, the address the
check passed is the one connected to, and HTTPS is still verified against the host name.

127.0.0.1 itself is refused, so each test allow-lists what it needs and makes the name
``hooks.example.test`` resolve to local addresses.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app import db, webhooks
from app.errors import PermanentError
from app.models import Job
from app.states import JobState
from app.webhooks import WebhookFailed, WebhookRedirected
from tests.support.factories import make_job

HOST = "hooks.example.test"


@dataclass
class Server:
    """A local HTTP server that records the requests it gets and answers ``status``."""

    port: int = 0
    status: int = 204
    location: str | None = None
    received: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


@contextmanager
def serving(
    address: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None, **answer: Any
) -> Iterator[Server]:
    state = Server(**answer)

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.received.append((self.command, self.path, dict(self.headers)))
            self.send_response(state.status)
            if state.location:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    if tls is not None:
        tls.sni_callback = lambda _socket, name, _context: state.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Resolver:
    """Answers for ``HOST`` in turn (the last one again and again), counting the calls;
    every other name goes to the real resolver."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> None:
        self.answers = answers
        self.calls = 0
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != HOST:
            return self.real(host, port, *args, **kwargs)
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answer]


def _job_calling(url: str) -> str:
    job_id = make_job(JobState.SUCCEEDED)
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.callback_url = url
    return job_id


def test_a_redirect_is_not_followed_and_fails_the_delivery_for_good(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", HOST)
    Resolver(monkeypatch, ["127.0.0.1"])
    with serving() as loopback:
        inner = f"http://127.0.0.1:{loopback.port}/admin"
        with serving(status=302, location=inner) as redirecting:
            job_id = _job_calling(f"http://{HOST}:{redirecting.port}/hook")
            with pytest.raises(WebhookRedirected) as raised:
                webhooks.deliver(job_id)

    assert isinstance(raised.value, PermanentError)
    message = str(raised.value)
    assert "answered 302" in message
    assert inner in message
    assert "redirects are not followed; set the callback URL to its final address" in message
    assert [(method, path) for method, path, _ in redirecting.received] == [("POST", "/hook")]
    assert loopback.received == []


def test_the_address_that_passed_the_check_is_the_one_connected_to(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the first answer passes the check, a second one would lead to a
    # refused address. Both servers listen on the same port, on two loopback addresses.
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", "127.0.0.2/32")
    resolver = Resolver(monkeypatch, ["127.0.0.2"], ["127.0.0.1"])
    with contextlib.ExitStack() as servers:
        # The port the first server got may be taken on 127.0.0.1 already: try another.
        for _ in range(20):
            checked = servers.enter_context(serving("127.0.0.2"))
            try:
                refused = servers.enter_context(serving("127.0.0.1", checked.port))
                break
            except OSError:
                servers.close()
        job_id = _job_calling(f"http://{HOST}:{checked.port}/hook")
        assert webhooks.deliver(job_id) == {"status": 204}

    assert refused.received == []
    assert resolver.calls == 1
    [(method, path, headers)] = checked.received
    assert (method, path, headers["Host"]) == ("POST", "/hook", f"{HOST}:{checked.port}")
    assert headers["X-Jobstack-Event"] == "job.succeeded"


def test_the_checked_addresses_are_tried_in_order_until_one_connects(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", "127.0.0.0/8")
    with serving("127.0.0.1") as listening:
        Resolver(monkeypatch, ["127.0.0.3", "127.0.0.1"])
        job_id = _job_calling(f"http://{HOST}:{listening.port}/hook")
        assert webhooks.deliver(job_id) == {"status": 204}
    assert len(listening.received) == 1


def test_an_answer_other_than_2xx_or_3xx_is_retried(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", HOST)
    Resolver(monkeypatch, ["127.0.0.1"])
    with serving(status=503) as unavailable:
        job_id = _job_calling(f"http://{HOST}:{unavailable.port}/hook")
        with pytest.raises(WebhookFailed, match="answered 503"):
            webhooks.deliver(job_id)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Self-signed certificates (each its own CA) with their keys, by host name."""
    folder = tmp_path_factory.mktemp("certificates")
    made = {}
    for name in (HOST, "elsewhere.example.test"):
        certificate, key = folder / f"{name}.pem", folder / f"{name}.key"
        request = (
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
            f"-subj /CN={name} -addext subjectAltName=DNS:{name}"
        )
        subprocess.run(
            [*request.split(), "-keyout", str(key), "-out", str(certificate)],
            check=True,
            capture_output=True,
        )
        made[name] = certificate
    return made


def _tls_server_context(certificate: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, certificate.with_suffix(".key"))
    return context


def test_https_to_the_checked_address_is_verified_against_the_host_name(
    clean_db: str, monkeypatch: pytest.MonkeyPatch, certificates: dict[str, Path]
) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", HOST)
    # OpenSSL reads it whenever a context loads the default trust store.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates[HOST]))
    Resolver(monkeypatch, ["127.0.0.1"])
    with serving(tls=_tls_server_context(certificates[HOST])) as secure:
        job_id = _job_calling(f"https://{HOST}:{secure.port}/hook")
        assert webhooks.deliver(job_id) == {"status": 204}

    assert secure.server_names == [HOST]
    [(_, _, headers)] = secure.received
    assert headers["Host"] == f"{HOST}:{secure.port}"


def test_https_to_a_server_without_a_certificate_for_the_host_name_fails(
    clean_db: str, monkeypatch: pytest.MonkeyPatch, certificates: dict[str, Path]
) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", HOST)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["elsewhere.example.test"]))
    Resolver(monkeypatch, ["127.0.0.1"])
    with serving(tls=_tls_server_context(certificates["elsewhere.example.test"])) as other:
        job_id = _job_calling(f"https://{HOST}:{other.port}/hook")
        with pytest.raises(WebhookFailed, match=re.compile("certificate verify failed", re.I)):
            webhooks.deliver(job_id)
    assert other.received == []
