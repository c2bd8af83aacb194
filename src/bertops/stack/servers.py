"""The MLflow tracking server and the Prefect server of the stack, both on PostgreSQL.

MLflow: basic auth with a generated admin password, artifacts proxied to the object store
(`--serve-artifacts`: clients need no S3 keys), `--allowed-hosts` set. Prefect: its API behind a
generated basic-auth string (PREFECT_SERVER_API_AUTH_STRING), a `gpu` work pool.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

from bertops.stack.proc import StackError, http_status, running_pid, spawn, stop_group, wait_until, write_pid

ADMIN = "admin"
WORK_POOL = "gpu"


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Service:
    name = "service"

    def __init__(self, root: Path, bind: str, advertise: str, port: int):
        self.root, self.bind, self.advertise, self.port = root, bind, advertise, port
        self.log, self.pid_file = root / f"{self.name}.log", root / f"{self.name}.pid"

    @property
    def local_url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.advertise}:{self.port}"

    def pid(self) -> int | None:
        return running_pid(self.pid_file)

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        proc = spawn(cmd, self.log, env, cwd=self.root)
        write_pid(self.pid_file, proc.pid)
        return proc

    def stop(self, grace_seconds: float = 15) -> None:
        pid = self.pid()
        if pid is not None:
            stop_group(pid, grace_seconds)
        self.pid_file.unlink(missing_ok=True)


class MlflowServer(Service):
    name = "mlflow"

    def __init__(self, root: Path, bind: str, advertise: str, port: int, password: str, secret_key: str,
                 workers: int = 2):
        super().__init__(root, bind, advertise, port)
        self.password, self.secret_key, self.workers = password, secret_key, workers

    def _auth_config(self, auth_db_url: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        ini = self.root / "basic_auth.ini"
        ini.write_text("[mlflow]\n"
                       "default_permission = READ\n"
                       f"database_uri = {auth_db_url}\n"
                       f"admin_username = {ADMIN}\n"
                       f"admin_password = {self.password}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                       "grant_default_workspace_access = false\n"
                       # each request's password check is a scrypt hash (~0.3 s of CPU on a busy core);
                       # cache good credentials for a minute (a changed password applies within 60 s)
                       "auth_cache_ttl_seconds = 60\n")
        ini.chmod(0o600)
        return ini

    def allowed_hosts(self) -> str:
        hosts = {self.advertise, "127.0.0.1", "localhost"}
        if self.bind not in ("0.0.0.0", ""):
            hosts.add(self.bind)
        return ",".join(f"{h}:{self.port}" for h in sorted(hosts)) + "," + ",".join(sorted(hosts))

    def start(self, env: dict[str, str], backend_url: str, auth_db_url: str, artifacts: str, s3_endpoint: str,
              s3_keys: tuple[str, str], timeout: float) -> float:
        env = {**env, "MLFLOW_AUTH_CONFIG_PATH": str(self._auth_config(auth_db_url)),
               "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
               "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": s3_keys[0],
               "AWS_SECRET_ACCESS_KEY": s3_keys[1], "AWS_DEFAULT_REGION": "us-east-1",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_BACKEND_STORE_URI": backend_url}  # in the environment, not on a command line `ps` shows
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                    "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME"):
            env.pop(key, None)
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", self.bind, "--port", str(self.port),
               "--workers", str(self.workers),
               "--artifacts-destination", artifacts, "--serve-artifacts", "--app-name", "basic-auth",
               "--allowed-hosts", self.allowed_hosts()]
        proc = self._spawn(cmd, env)
        headers = basic_auth_header(ADMIN, self.password)
        url = f"{self.local_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
        return wait_until("MLflow server", lambda: http_status(url, headers) == 200, timeout, self.log, proc)


class PrefectServer(Service):
    name = "prefect"

    def __init__(self, root: Path, bind: str, advertise: str, port: int, password: str):
        super().__init__(root, bind, advertise, port)
        self.password = password

    @property
    def auth_string(self) -> str:
        return f"{ADMIN}:{self.password}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def client_env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, "PREFECT_API_URL": f"{self.local_url}/api", "PREFECT_API_AUTH_STRING": self.auth_string,
                "PREFECT_HOME": str(self.root / "home")}

    def start(self, env: dict[str, str], database_url: str, timeout: float) -> float:
        env = {**env, "PREFECT_HOME": str(self.root / "home"), "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
               "PREFECT_SERVER_API_AUTH_STRING": self.auth_string, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_API_URL": f"{self.api_url}", "PREFECT_SERVER_API_HOST": self.bind,
               "PREFECT_SERVER_API_PORT": str(self.port)}
        for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
            env.pop(key, None)
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", self.bind, "--port", str(self.port)]
        proc = self._spawn(cmd, env)
        headers = basic_auth_header(ADMIN, self.password)
        url = f"{self.local_url}/api/health"
        return wait_until("Prefect server", lambda: http_status(url, headers) == 200, timeout, self.log, proc)

    def ensure_work_pool(self, env: dict[str, str], name: str = WORK_POOL, pool_type: str = "process",
                         concurrency_limit: int = 1) -> None:
        """Create (or update) the work pool through Prefect's own client."""
        code = (
            "import sys\n"
            "from prefect.client.orchestration import get_client\n"
            "from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate\n"
            "from prefect.exceptions import ObjectAlreadyExists\n"
            "name, kind, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
            "with get_client(sync_client=True) as c:\n"
            "    try:\n"
            "        c.create_work_pool(WorkPoolCreate(name=name, type=kind, concurrency_limit=limit))\n"
            "    except ObjectAlreadyExists:\n"
            "        c.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))\n"
            "    print(c.read_work_pool(name).concurrency_limit)\n")
        out = subprocess.run([sys.executable, "-c", code, name, pool_type, str(concurrency_limit)],
                             env=self.client_env(env), capture_output=True, text=True, timeout=180,
                             cwd=self.root)
        if out.returncode != 0:
            raise StackError(f"Prefect: creating work pool {name!r} failed; server log: {self.log}\n"
                             f"{out.stderr[-3000:]}")
