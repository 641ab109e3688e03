"""The automl service's tables (its own schema): kernel tables plus observation logs and studies.

- ``observation_logs``: every metric a trial reported (Katib's ``observation_logs`` table, plus a
  step), what ``GetObservationLog`` returns and what medianstop averages.
- ``study_trials``: one row per suggested trial, written in the same transaction as the Trial
  object. It holds what the Optuna study needs to be rebuilt after a restart (params,
  distributions, the sampler's per-trial system attributes, the final value).
- ``studies``: per experiment, the sampler's study-level system attributes and the hyperband
  schedule position.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from services.common.db import new_metadata
from services.common.tables import BigId, add_kernel_tables

metadata = new_metadata()
add_kernel_tables(metadata)

observation_logs = Table(
    "observation_logs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("namespace", String(253), nullable=False),
    Column("trial_name", String(253), nullable=False),
    Column("metric_name", String(255), nullable=False),
    Column("value", Text, nullable=False),
    Column("step", Integer, nullable=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Index("ix_observation_logs_trial", "namespace", "trial_name", "metric_name", "id"),
)

study_trials = Table(
    "study_trials",
    metadata,
    Column("experiment_uid", String(36), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("trial_name", String(253), nullable=False),
    Column("params", JSON, nullable=False),  # name -> internal (Optuna) value
    Column("distributions", JSON, nullable=False),  # name -> Optuna distribution JSON
    Column("system_attrs", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # RUNNING, COMPLETE, FAIL, PRUNED
    Column("value", Float, nullable=True),
    Column("rung", Integer, nullable=True),  # hyperband: bracket * 100 + stage
)

studies = Table(
    "studies",
    metadata,
    Column("experiment_uid", String(36), primary_key=True),
    Column("system_attrs", JSON, nullable=False),
    Column("state", JSON, nullable=False),  # algorithm-specific (hyperband position)
    Column("updated", BigInteger, nullable=False),
)
