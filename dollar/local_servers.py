"""Servers on this machine for the system checks of the app (benchmarks/ and tests/): a free
loopback port, a throwaway PostgreSQL server, ``python app.py`` served for a while, waiting for a
server to answer, and a raw call of a served Gradio app's API. Everything listens on 127.0.0.1
unless told otherwise."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float, name: str = "the server") -> None:
    """Return once ``url`` answers 200; raise when ``proc`` (the server, called ``name``) exits or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{name} did not answer on {url} within {timeout:.0f} s")


@contextmanager
def served_app(app_path: str, argv: list[str], log_path: str, timeout: float = 300) -> Iterator[tuple[str, int, int]]:
    """``python app_path argv --port <a free port>`` (app.py, as a user starts it) while the block
    runs: yields (its URL on 127.0.0.1, the port, the process id) once it answers, and stops it
    afterwards. Its output goes to ``log_path``; a failure to start says so with the log's end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        cmd = [sys.executable, app_path, *argv, "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.abspath(app_path)), stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_http(url, proc, timeout, name="app.py")
            except (RuntimeError, TimeoutError) as err:
                with open(log_path) as f:
                    raise RuntimeError(f"{err}; the end of its output ({log_path}):\n{f.read()[-3000:]}") from None
            yield url, port, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def listening_address(pid: int, port: int) -> str | None:
    """The address the process ``pid`` listens on at TCP ``port`` (e.g. 127.0.0.1 or 0.0.0.0); None when it does not."""
    import psutil

    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
            return conn.laddr.ip
    return None


def gradio_call(port: int, api: str, body: str) -> tuple[str, str]:
    """A raw HTTP call of ``/gradio_api/call/<api>`` on 127.0.0.1 with the JSON ``body`` written by
    hand (so NaN, Infinity and malformed values go through as a client could send them):
    (the final event, e.g. "complete" or "error"; its data as JSON text, "null" when none)."""
    url = f"http://127.0.0.1:{port}/gradio_api/call/{api}"
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{url}/{event_id}", timeout=120) as r:
        lines = r.read().decode().splitlines()
    event = next((line.split(": ", 1)[1] for line in lines if line.startswith("event: ")), "")
    data = next((line.split(": ", 1)[1] for line in lines if line.startswith("data: ")), "null")
    return event, data


def find_postgres_bindir() -> str | None:
    """The folder of PostgreSQL's server programs (Debian's `postgresql`, or initdb on PATH); None when absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def start_postgres(folder: str, extra_options: str = ""):
    """A throwaway PostgreSQL server (apt `postgresql`) with its data in ``folder``: (SQLAlchemy URL
    of its `postgres` database, a function that stops it). ``extra_options``: more server
    settings, e.g. ``-c fsync=off`` for tests. ``folder`` must be reachable by the `postgres` user
    when running as root (initdb refuses root)."""
    bindir = find_postgres_bindir()
    if not bindir:
        raise SystemExit("PostgreSQL is not installed: apt-get install -y postgresql (and pip install 'psycopg[binary]').")
    data, sockets = os.path.join(folder, "pgdata"), os.path.join(folder, "pgsock")
    os.makedirs(sockets)
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        for path in (folder, sockets):
            shutil.chown(path, "postgres")
            os.chmod(path, 0o755)
    port = free_port()
    subprocess.run(
        [*run_as, f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200 {extra_options}".strip()
    log = os.path.join(folder, "pg.log")
    subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-o", options, "-w", "-l", log, "start"], check=True, capture_output=True)

    def stop():
        subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop
