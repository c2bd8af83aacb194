"""tracking.configure: a process that loses the race to create the experiment still logs into it."""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from bertops import tracking


def test_losing_the_experiment_creation_race_still_logs_into_the_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTOPS_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BERTOPS_EXPERIMENT", "raced")
    create = SqlAlchemyStore.create_experiment  # under every client: the race happens in the store

    def lose_the_race(self, name, *args, **kwargs):
        create(self, name, *args, **kwargs)  # another process creates it first ...
        raise MlflowException(f"Experiment {name!r} already exists.", error_code=RESOURCE_ALREADY_EXISTS)

    monkeypatch.setattr(SqlAlchemyStore, "create_experiment", lose_the_race)
    with tracking.configure().start_run() as run:
        pass
    experiment = mlflow.MlflowClient().get_experiment_by_name("raced")
    assert run.info.experiment_id == experiment.experiment_id != "0"
