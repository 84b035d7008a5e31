"""A local load balancer for scale tests: Debian's nginx as a foreground child process, with its
config, pid, temp and log files in a directory of its own, round-robin over gateway processes.

Its access log names the upstream (the replica) that served each request, so a test can show that
traffic really was spread and which replica answered what.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import free_port, in_ci

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TAG_HEADER = "x-test-tag"

CONF = """\
worker_processes 1;
daemon off;
master_process on;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    log_format replica '$upstream_addr $status $http_{tag_var}';
    access_log {dir}/access.log replica;
    server_tokens off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    client_max_body_size 16m;

    upstream gateways {{
{servers}
        keepalive 64;
        # Below the gateway's own keep-alive timeout (uvicorn: 5 s), so nginx never sends a request
        # on a connection the gateway is closing (a POST is not retried: the caller would get 502).
        keepalive_timeout 4s;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # Server-sent events go through as they are produced.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 120s;
            # A POST that reached a replica is never sent to another one.
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Served:
    upstream: str  # host:port of the replica
    status: int
    tag: str


class Nginx:
    """`nginx -c <dir>/nginx.conf` in the foreground, one worker, on a free port."""

    def __init__(self, upstreams: list[str], directory: Path) -> None:
        if not Path(NGINX).exists():
            if in_ci():
                raise RuntimeError("nginx is not installed (scripts/system-deps installs it)")
            pytest.skip("nginx is not installed")
        self.dir = directory
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # As root, nginx's worker would switch to `nobody`, which cannot write this directory.
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
        conf = CONF.format(
            dir=directory, port=self.port, user=user, tag_var=TAG_HEADER.replace("-", "_"),
            servers="\n".join(f"        server {u} max_fails=0;" for u in upstreams),
        )
        self.conf_path = directory / "nginx.conf"
        self.conf_path.write_text(conf)
        self.access_log = directory / "access.log"
        self._out = (directory / "nginx.out").open("wb")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(self.conf_path), "-e", str(directory / "error.log")],
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx not ready after {timeout}s:\n{self.errors()}")

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def served(self, tag: str) -> list[Served]:
        """Every request nginx finished with this tag header, in order."""
        out = []
        for line in self.access_log.read_text().splitlines():
            upstream, status, got = line.split(" ", 2)
            if got == tag:
                out.append(Served(upstream, int(status), got))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
