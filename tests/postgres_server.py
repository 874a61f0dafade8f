"""A real PostgreSQL server for tests, from the system's packages (Debian's `postgresql`): a fresh
cluster in a temporary folder on a loopback port, trust authentication, stopped afterwards.
PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # the folder with all of them (a link to initdb may stand alone)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class PostgresServer:
    folder: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self, name: str) -> str:
        """A new, empty database on this server; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)


def start() -> PostgresServer:
    directory = binaries()
    if directory is None:
        raise FileNotFoundError("PostgreSQL's initdb was not found: apt-get install postgresql (scripts/setup --test does)")
    folder = Path(tempfile.mkdtemp(prefix="workhorse-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PostgresServer(folder, port, directory)
    server._run("initdb", "-D", str(folder / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
    server._run("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-o",
                f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=100", "start")
    return server
