"""Servers on this machine for the system checks of the app (benchmarks/ and tests/): a free
loopback port, a throwaway PostgreSQL server, waiting for a server to answer, and a raw call of a
served Gradio app's API. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request


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
