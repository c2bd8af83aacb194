"""Bring the whole stack up or down in one state directory (default `.stack/`).

    up      PostgreSQL -> SeaweedFS (S3) -> MLflow + Prefect servers -> `gpu` work pool -> stack.env
    down    stop every service by its own pid (data stays; purge=True removes the state directory)
    status  which services run, with their pids and URLs

The first `up` fixes the configuration (bind address, ports) and generates every secret into
state.json (mode 0600); later `up`s reuse it, so the data stays readable. `up` starts only the
services that are not running and reports the others.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bertops.env import OFFLINE_ENV
from bertops.stack.objectstore import BUCKETS, ObjectStore
from bertops.stack.postgres import Postgres
from bertops.stack.proc import StackError
from bertops.stack.servers import ADMIN, WORK_POOL, MlflowServer, PrefectServer

DEFAULT_STATE_DIR = Path(".stack")
DEFAULT_PORTS = {"postgres": 15432, "mlflow": 5050, "prefect": 4200, "s3": 8333, "s3_grpc": 18333,
                 "master": 9333, "master_grpc": 19333, "volume": 8084, "volume_grpc": 18084,
                 "filer": 8888, "filer_grpc": 18888}
MLFLOW_ARTIFACTS = f"s3://{BUCKETS[0]}/artifacts"
DVC_REMOTE_URL = f"s3://{BUCKETS[1]}/store"
CHECKPOINT_STORE_URL = f"s3://{BUCKETS[2]}/bertops"
SERVICES = ("postgres", "objectstore", "mlflow", "prefect")


@dataclass
class StackConfig:
    bind: str = "127.0.0.1"
    advertise: str = ""  # the address clients use; defaults to bind (or this host's name for 0.0.0.0)
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    mlflow_workers: int = 2
    timeout: float = 120.0  # per service health check

    def __post_init__(self):
        if not self.advertise:
            self.advertise = socket.getfqdn() if self.bind in ("0.0.0.0", "") else self.bind
        self.ports = {**DEFAULT_PORTS, **self.ports}


def free_ports() -> dict[str, int]:
    """A free loopback port for every service (for tests and side-by-side stacks)."""
    socks, ports = [], {}
    try:
        for name in DEFAULT_PORTS:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports[name] = s.getsockname()[1]
    finally:
        for s in socks:
            s.close()
    return ports


def _new_secrets() -> dict[str, str]:
    """Hex only: safe unquoted in URLs, shell lines, ini files and command lines (never a leading '-')."""
    return {name: secrets.token_hex(20) for name in
            ("postgres_password", "mlflow_admin_password", "mlflow_secret_key", "prefect_password",
             "s3_secret_key")} | {"s3_access_key": "bertops" + secrets.token_hex(6)}


class Stack:
    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, config: StackConfig | None = None):
        self.state_dir = Path(state_dir).resolve()
        self.state_file = self.state_dir / "state.json"
        self.env_file = self.state_dir / "stack.env"
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else None
        self.config_ignored = False
        if state is not None:
            self.config = StackConfig(**state["config"])  # the first `up` fixed it
            self.secrets = state["secrets"]
            self.config_ignored = config is not None and asdict(config) != asdict(self.config)
        else:
            self.config, self.secrets = config or StackConfig(), _new_secrets()
        c, s, d = self.config, self.secrets, self.state_dir
        self.postgres = Postgres(d / "postgres", c.ports["postgres"], s["postgres_password"])
        self.objectstore = ObjectStore(d / "seaweedfs", c.bind, c.advertise, c.ports, s["s3_access_key"],
                                       s["s3_secret_key"])
        self.mlflow = MlflowServer(d / "mlflow", c.bind, c.advertise, c.ports["mlflow"], s["mlflow_admin_password"],
                                   s["mlflow_secret_key"], c.mlflow_workers)
        self.prefect = PrefectServer(d / "prefect", c.bind, c.advertise, c.ports["prefect"], s["prefect_password"])

    # -- state ---------------------------------------------------------------------------------------
    def _save_state(self, timings: dict[str, float] | None = None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700 if os.geteuid() != 0 else 0o711)
        old = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        state = {"config": asdict(self.config), "secrets": self.secrets,
                 "startup_seconds": timings if timings is not None else old.get("startup_seconds", {})}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    def pids(self) -> dict[str, int | None]:
        return {"postgres": self.postgres.pid(), "objectstore": self.objectstore.pid(),
                "mlflow": self.mlflow.pid(), "prefect": self.prefect.pid()}

    def client_env(self) -> dict[str, str]:
        """What a client (pipeline, worker, DVC) needs: written to stack.env."""
        s = self.secrets
        return {
            "MLFLOW_TRACKING_URI": self.mlflow.url,
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": s["mlflow_admin_password"],
            "PREFECT_API_URL": self.prefect.api_url,
            "PREFECT_API_AUTH_STRING": self.prefect.auth_string,
            "BERTOPS_WORK_POOL": WORK_POOL,
            "BERTOPS_DVC_REMOTE_URL": DVC_REMOTE_URL,
            "BERTOPS_S3_ENDPOINT_URL": self.objectstore.endpoint,
            "AWS_ACCESS_KEY_ID": s["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": s["s3_secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            # the checkpoint store (bertops.stages.pretrain): s3fs/boto3/the AWS CLI read this endpoint
            "AWS_ENDPOINT_URL_S3": self.objectstore.endpoint,
            "BERTOPS_CHECKPOINT_STORE": CHECKPOINT_STORE_URL,
        }

    def _write_env(self) -> None:
        lines = ["# The bertops stack's client environment (python -m bertops.stack up). Secrets: keep it private.",
                 f"# Use: source {self.env_file}"]
        lines += [f"export {k}={v}" for k, v in self.client_env().items()]
        tmp = self.env_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o600)
        tmp.replace(self.env_file)

    # -- up / down ------------------------------------------------------------------------------------
    def _check_ports_free(self, names: list[str]) -> None:
        host = "127.0.0.1" if self.config.bind in ("0.0.0.0", "") else self.config.bind
        busy = []
        for name in names:
            with socket.socket() as s:
                if s.connect_ex((host, self.config.ports[name])) == 0:
                    busy.append(f"{name} ({host}:{self.config.ports[name]})")
        if busy:
            raise StackError("ports already in use: " + ", ".join(busy) +
                             f"; stop what holds them or choose other ports (state: {self.state_file})")

    def up(self, log=print) -> dict[str, float]:
        """Start every service that is not running; seconds each took (0 for one already running)."""
        env = {**os.environ, **OFFLINE_ENV}
        if self.config_ignored:
            log(f"note: using the bind address and ports of the first `up` ({self.state_file}); "
                "`down --purge` first to change them")
        self._save_state()
        running = self.pids()
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        weed_ports = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
        self._check_ports_free([p for svc, ports in (("postgres", ["postgres"]), ("objectstore", weed_ports),
                                                     ("mlflow", ["mlflow"]), ("prefect", ["prefect"]))
                                if running[svc] is None for p in ports])
        with ThreadPoolExecutor(1) as pool:  # SeaweedFS starts while PostgreSQL does (neither needs the other)
            weed = None
            if running["objectstore"] is None:
                weed = pool.submit(lambda: (time.monotonic(), self.objectstore.start(env, self.config.timeout)))
            if running["postgres"] is None:
                t = time.monotonic()
                if not self.postgres.initialised():
                    self.postgres.init()
                    timings["postgres_initdb"] = time.monotonic() - t
                self.postgres.start(self.config.timeout)
                timings["postgres"] = time.monotonic() - t
                log(f"PostgreSQL    up in {timings['postgres']:.1f} s (127.0.0.1:{self.config.ports['postgres']})")
            else:
                log(f"PostgreSQL    already running (pid {running['postgres']})")
            self.postgres.create_databases()
            if weed is not None:
                t, _ = weed.result()
                timings["objectstore"] = time.monotonic() - t
                log(f"SeaweedFS S3  up in {timings['objectstore']:.1f} s ({self.objectstore.endpoint})")
            else:
                log(f"SeaweedFS S3  already running (pid {running['objectstore']})")
        jobs = {}
        with ThreadPoolExecutor(2) as pool:
            if running["mlflow"] is None:
                jobs["mlflow"] = pool.submit(
                    self.mlflow.start, env, self.postgres.url("mlflow"), self.postgres.url("mlflow_auth"),
                    MLFLOW_ARTIFACTS, self.objectstore.local_endpoint,
                    (self.secrets["s3_access_key"], self.secrets["s3_secret_key"]), self.config.timeout)
            if running["prefect"] is None:
                jobs["prefect"] = pool.submit(self.prefect.start, env, self.postgres.url("prefect", "asyncpg"),
                                              self.config.timeout)
            errors = []
            for name, job in jobs.items():
                try:
                    timings[name] = job.result()
                except StackError as exc:
                    errors.append(str(exc))
            if errors:
                raise StackError("\n\n".join(errors))
        for name in ("mlflow", "prefect"):
            url = self.mlflow.url if name == "mlflow" else self.prefect.url
            what = "MLflow server " if name == "mlflow" else "Prefect server"
            log(f"{what} up in {timings[name]:.1f} s ({url})" if name in timings
                else f"{what} already running (pid {running[name]})")
        self.prefect.ensure_work_pool(env)
        timings["total"] = time.monotonic() - t0
        self._save_state(timings)
        self._write_env()
        log(f"stack up in {timings['total']:.1f} s; client environment: source {self.env_file}")
        return timings

    def down(self, purge: bool = False, log=print) -> None:
        """Stop every service by its pid (the servers and SeaweedFS at once, PostgreSQL last); purge
        removes all data."""
        def stop(name, svc) -> str:
            t = time.monotonic()
            svc.stop()
            return f"{name} stopped in {time.monotonic() - t:.1f} s"

        servers = [(name, svc) for name, svc in (("Prefect server", self.prefect), ("MLflow server", self.mlflow),
                                                 ("SeaweedFS", self.objectstore)) if svc.pid() is not None]
        stopped = len(servers)
        if servers:
            with ThreadPoolExecutor(len(servers)) as pool:
                for line in pool.map(lambda named: stop(*named), servers):
                    log(line)
        if self.postgres.pid() is not None:  # last: the servers use it until they stop
            log(stop("PostgreSQL", self.postgres))
            stopped += 1
        if not stopped:
            log(f"nothing was running ({self.state_dir})")
        if purge and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            log(f"removed {self.state_dir}")

    def status(self) -> dict[str, dict]:
        pids = self.pids()
        urls = {"postgres": f"127.0.0.1:{self.config.ports['postgres']}", "objectstore": self.objectstore.endpoint,
                "mlflow": self.mlflow.url, "prefect": self.prefect.url}
        return {name: {"running": pids[name] is not None, "pid": pids[name], "url": urls[name]} for name in SERVICES}


def load_env(state_dir: Path | str = DEFAULT_STATE_DIR, name: str = "stack.env") -> dict[str, str]:
    """The client environment stack.env holds (as a dict, for subprocesses and tests)."""
    env = {}
    for line in (Path(state_dir) / name).read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    return env
