"""A real nginx ``limit_req`` reverse proxy, to put in front of :class:`FakeProvider`.

nginx's ``limit_req`` is the most deployed server-side rate limiter. :class:`NginxLimiter`
runs one as a child process on a free loopback port, proxying every path to an upstream base
URL; all requests share one limit (a constant key). Needs nginx (``apt-get install
nginx-light``); it writes nothing outside its own temporary directory, as root or not::

    async with FakeProvider() as fake, NginxLimiter(fake.url, rate=10, status=429) as nginx:
        ...  # drive the client at nginx.url with fake.api_key
    print(nginx.log())  # [(arrival, status), ...]: every request nginx received

``with NginxLimiter(...)`` works too (benchmarks, with the fake in another process).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["NginxLimiter"]

# One process, our child (daemon and master_process off), which stays root if started as root:
# no switch to `user`, whose workers could not reach the private temporary directory.
_CONF = """daemon off; master_process off; worker_processes 1; events {{ worker_connections 4096; }}
pid "{d}/nginx.pid"; lock_file "{d}/nginx.lock"; error_log "{d}/error.log" warn;
http {{
    {temp}
    log_format limiter '$msec $request_time $status'; access_log "{d}/access.log" limiter;
    limit_req_zone all zone=limiter:1m rate={rate}r/s; limit_req_log_level info; {status}
    client_max_body_size 0; underscores_in_headers on;
    upstream provider {{ server {upstream}; keepalive 64; }}
    server {{ listen "unix:{d}/status.sock"; access_log off; location / {{ stub_status; }} }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=limiter{burst}{nodelay};
            proxy_pass http://provider; proxy_http_version 1.1;
            proxy_set_header Connection ""; proxy_set_header Host $http_host;
        }}
    }}
}}
"""
_TEMP = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
_ATTEMPTS = 3  # a free port another process took before nginx bound it: try another one


class NginxLimiter:
    """nginx with ``limit_req`` in front of ``upstream``; a sync and an async context manager.

    :param upstream: Base URL to proxy every path to, ``http://HOST:PORT`` (no path).
    :param rate: Requests per second (``rate=Nr/s``): nginx admits one every ``1/rate`` s.
    :param burst: Requests beyond the rate nginx queues (delays), or with ``nodelay`` admits
        at once; any more are rejected.
    :param nodelay: Admit the ``burst`` at once instead of spacing them out at the rate.
    :param status: Status of a rejection (``limit_req_status``); None keeps nginx's 503.
    """

    def __init__(
        self, upstream: str, *, rate: int, burst: int = 0, nodelay: bool = False,
        status: int | None = None,
    ) -> None:  # fmt: skip
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or "@" in parts.netloc:
            raise ValueError(f"upstream must be http://HOST:PORT, not {upstream!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"upstream must have no path, query or fragment: {upstream!r}")
        if rate < 1 or burst < 0 or not (status is None or 400 <= status <= 599):
            raise ValueError("need rate >= 1, burst >= 0 and status None or in 400..599")
        self._params = {
            "upstream": parts.netloc, "rate": rate, "burst": f" burst={burst}" if burst else "",
            "nodelay": " nodelay" if nodelay else "",
            "status": "" if status is None else f"limit_req_status {status};",
        }  # fmt: skip
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._log: list[tuple[float, int]] = []  # kept when nginx stops

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, where nginx listens; only while started."""
        if self._proc is None:
            raise RuntimeError("NginxLimiter is not started")
        return f"http://127.0.0.1:{self._port}"

    def log(self) -> list[tuple[float, int]]:
        """``(arrival, status)`` of every request nginx received, in the order it answered.

        ``arrival`` is ``time.time()`` when nginx read the request's first bytes, to the
        millisecond (``$msec - $request_time``). nginx writes a line once it has sent the
        response, so a read while it runs may miss the last instant's; after exit it is whole.
        """
        if self._dir is None:
            return list(self._log)
        lines = (self._dir / "access.log").read_text().splitlines(keepends=True)
        fields = [line.split() for line in lines if line.endswith("\n")]
        return [(round(float(end) - float(took), 3), int(code)) for end, took, code in fields]

    def _spawn(self, folder: Path) -> subprocess.Popen[bytes]:
        binary = "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
        binary = binary or shutil.which("nginx")
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self._port = sock.getsockname()[1]
        temp = " ".join(f'{name}_temp_path "{folder}/{name}";' for name in _TEMP)
        conf = _CONF.format(d=folder, temp=temp, port=self._port, **self._params)
        (folder / "nginx.conf").write_text(conf)
        (folder / "error.log").write_text("")
        command = [binary, "-p", f"{folder}/", "-c", "nginx.conf", "-e", "error.log"]
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip

    def _starting(self) -> Iterator[None]:
        """Start nginx, yielding whenever the caller should wait a moment before resuming."""
        self._dir = folder = Path(tempfile.mkdtemp(prefix="nginx-limiter-"))
        for _ in range(_ATTEMPTS):
            self._proc = proc = self._spawn(folder)
            deadline, errors = time.monotonic() + 10, ""
            while "(98: " not in errors:  # EADDRINUSE: nginx retries for 2.5 s; we move on
                pid = folder / "nginx.pid"  # written once nginx listens
                if pid.exists() and pid.read_text().strip() == str(proc.pid):
                    with socket.socket() as sock:
                        if sock.connect_ex(("127.0.0.1", self._port)) == 0:
                            return
                errors = (folder / "error.log").read_text()
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start; its error log:\n{errors[-2000:]}")
                yield
            proc.kill()
            proc.wait()
        raise RuntimeError(f"nginx found no free port in {_ATTEMPTS} tries")

    def _busy(self) -> bool:
        """Whether nginx holds a request it has not logged yet (stub_status: ``Writing``)."""
        assert self._dir is not None
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1)
                sock.connect(str(self._dir / "status.sock"))
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                reply = b"".join(iter(lambda: sock.recv(4096), b""))
        except OSError:  # not answering: stop it anyway
            return False
        counts = re.search(rb"Reading: (\d+) Writing: (\d+)", reply)
        return counts is None or int(counts[1]) > 0 or int(counts[2]) > 1  # 1: this request

    def _stopping(self) -> Iterator[None]:
        """Yield until nginx has logged every request (2 s at most), then while it exits.

        Stopped (SIGTERM), a single-process nginx drops requests it has answered but not yet
        logged (say, one still discarding a rejected request's body); its log would lack them.
        """
        proc, deadline = self._proc, time.monotonic() + 2
        while proc is not None and proc.poll() is None and time.monotonic() < deadline:
            if not self._busy():
                break
            yield
        if proc is not None and proc.poll() is None:
            proc.terminate()
            deadline = time.monotonic() + 5  # then _kill ends it
            while proc.poll() is None and time.monotonic() < deadline:
                yield

    def _kill(self) -> None:
        """SIGKILL nginx if it still runs, keep its log and remove the temporary directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
        if self._dir is not None:
            self._log = self.log() if (self._dir / "access.log").exists() else []
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> NginxLimiter:
        self._wait(self._starting())
        return self

    def __exit__(self, *exc: object) -> None:
        self._wait(self._stopping())
        self._kill()

    async def __aenter__(self) -> NginxLimiter:
        await self._await(self._starting())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._await(self._stopping())
        self._kill()

    def _wait(self, steps: Iterator[None]) -> None:
        try:
            for _ in steps:
                time.sleep(0.01)
        except BaseException:  # failed or interrupted: leave no nginx behind
            self._kill()
            raise

    async def _await(self, steps: Iterator[None]) -> None:
        try:
            for _ in steps:
                await asyncio.sleep(0.01)  # the event loop runs on while nginx starts or stops
        except BaseException:  # failed or cancelled: leave no nginx behind
            self._kill()
            raise
