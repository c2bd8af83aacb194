"""PostgreSQL 15 for the stack: Debian's binaries, a cluster in the state directory.

The cluster listens on 127.0.0.1 only (the MLflow and Prefect servers run beside it) and on a unix
socket inside the state directory; every connection needs the generated password (scram-sha-256).
PostgreSQL refuses to run as root: under root the cluster belongs to, and runs as, the `postgres`
user that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from bertops.lifeline import identity, is_alive
from bertops.stack.proc import StackError, log_tail, wait_until


def _pg_bin() -> Path:
    """BERTOPS_PG_BIN, else Debian's PostgreSQL 15, else the newest Debian PostgreSQL installed."""
    if os.environ.get("BERTOPS_PG_BIN"):
        return Path(os.environ["BERTOPS_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    preferred = Path("/usr/lib/postgresql/15/bin")
    return preferred if (preferred / "initdb").exists() or not found else found[-1].parent


PG_BIN = _pg_bin()
SUPERUSER = "bertops"
DATABASES = ("mlflow", "mlflow_auth", "prefect")


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StackError("PostgreSQL cannot run as root and there is no `postgres` user "
                         "(install Debian's `postgresql`: make system-deps)") from exc
    return "postgres"


def _binary(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise StackError(f"PostgreSQL binary {path} not found: install Debian's `postgresql` "
                         "(make system-deps) or set BERTOPS_PG_BIN")
    return str(path)


def _own(path: Path, user: str | None) -> None:
    """Give `path` to `user` (when running as root) and let it traverse the folders above."""
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o001:
            continue
        if parent == path.parent:  # the state directory, ours: let `postgres` pass through it
            parent.chmod(mode | 0o011)
        else:
            raise StackError(f"the `postgres` user cannot enter {parent} (mode {oct(mode & 0o777)}): "
                             "choose a state directory it can reach")


class Postgres:
    def __init__(self, root: Path, port: int, password: str):
        self.root, self.port, self.password = root, port, password
        self.data, self.run_dir, self.log = root / "data", root / "run", root / "postgres.log"
        self.user = _run_as()

    def url(self, database: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run(list(args), capture_output=True, text=True, user=self.user, timeout=timeout,
                             cwd=self.root)
        if out.returncode != 0:
            raise StackError(f"PostgreSQL: {' '.join(args[:2])} failed (exit {out.returncode}); log: {self.log}\n"
                             f"{out.stdout[-2000:]}{out.stderr[-2000:]}\n{log_tail(self.log)}")
        return out

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        _own(self.root, self.user)
        try:
            self._cmd(_binary("initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        finally:
            pwfile.unlink()

    def pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid when that process runs."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if is_alive(identity(pid)) else None  # a zombie postmaster counts as stopped

    def start(self, timeout: float) -> float:
        """Start the cluster and wait until it accepts a password login; seconds taken."""
        if not self.log.exists():
            self.log.touch()
            _own(self.log, self.user)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.run_dir}"
        self._cmd(_binary("pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-o", opts,
                  "-w", "-t", str(int(timeout)), timeout=timeout + 10)
        return wait_until("PostgreSQL", self._login, timeout, self.log)

    def _login(self) -> bool:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password,
                         dbname="postgres", connect_timeout=3).close()
        return True

    def create_databases(self, names=DATABASES) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password,
                                dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database")
                have = {row[0] for row in cur.fetchall()}
                for name in names:
                    if name not in have:
                        cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self, timeout: float = 30) -> None:
        if self.pid() is None:
            return
        subprocess.run([_binary("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout))],
                       capture_output=True, user=self.user, timeout=timeout + 10, cwd=self.root)
        pid = self.pid()
        if pid is not None:  # did not stop in time: immediate shutdown, then SIGKILL
            subprocess.run([_binary("pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w"],
                           capture_output=True, user=self.user, timeout=40, cwd=self.root)
            if self.pid() is not None:
                os.kill(pid, 9)

    def purge(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
