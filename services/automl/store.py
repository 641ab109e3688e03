"""Queries on the automl tables: observation logs and the study behind each experiment."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.automl.algorithms import StudyRow
from services.automl.collector import MetricLog
from services.automl.tables import observation_logs, studies, study_trials


async def replace_observations(
    session: AsyncSession, namespace: str, trial: str, logs: Sequence[MetricLog]
) -> None:
    """Make the trial's observation log exactly ``logs`` (collection is re-runnable)."""
    await session.execute(
        delete(observation_logs).where(
            observation_logs.c.namespace == namespace, observation_logs.c.trial_name == trial
        )
    )
    await add_observations(session, namespace, trial, logs)


async def add_observations(
    session: AsyncSession, namespace: str, trial: str, logs: Sequence[MetricLog]
) -> None:
    if logs:
        await session.execute(
            insert(observation_logs),
            [
                {
                    "namespace": namespace,
                    "trial_name": trial,
                    "metric_name": m.name,
                    "value": m.value,
                    "step": m.step,
                    "time": m.time,
                }
                for m in logs
            ],
        )


async def read_observations(
    session: AsyncSession,
    namespace: str,
    trial: str,
    metric: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100_000,
) -> list[MetricLog]:
    query = select(observation_logs).where(
        observation_logs.c.namespace == namespace, observation_logs.c.trial_name == trial
    )
    if metric:
        query = query.where(observation_logs.c.metric_name == metric)
    if start is not None:
        query = query.where(observation_logs.c.time >= start)
    if end is not None:
        query = query.where(observation_logs.c.time <= end)
    rows = (await session.execute(query.order_by(observation_logs.c.id).limit(limit))).all()
    return [MetricLog(r.metric_name, r.value, r.time, r.step) for r in rows]


async def delete_trial_data(
    session: AsyncSession, namespace: str, trials: Sequence[str], experiment_uid: str
) -> None:
    if trials:
        await session.execute(
            delete(observation_logs).where(
                observation_logs.c.namespace == namespace,
                observation_logs.c.trial_name.in_(list(trials)),
            )
        )
    await session.execute(
        delete(study_trials).where(study_trials.c.experiment_uid == experiment_uid)
    )
    await session.execute(delete(studies).where(studies.c.experiment_uid == experiment_uid))


async def load_study(
    session: AsyncSession, experiment_uid: str
) -> tuple[list[StudyRow], dict[str, Any], dict[str, Any]]:
    rows = (
        await session.execute(
            select(study_trials)
            .where(study_trials.c.experiment_uid == experiment_uid)
            .order_by(study_trials.c.number)
        )
    ).all()
    out = [
        StudyRow(
            r.number,
            r.trial_name,
            dict(r.params),
            dict(r.distributions),
            dict(r.system_attrs),
            r.state,
            r.value,
            r.rung,
        )
        for r in rows
    ]
    head = (
        await session.execute(select(studies).where(studies.c.experiment_uid == experiment_uid))
    ).first()
    if head is None:
        return out, {}, {}
    return out, dict(head.system_attrs), dict(head.state)


async def save_study(
    session: AsyncSession,
    experiment_uid: str,
    new: Sequence[StudyRow],
    updated: Sequence[StudyRow],
    system_attrs: dict[str, Any],
    state: dict[str, Any],
    *,
    exists: bool,
) -> None:
    for row in updated:
        await session.execute(
            update(study_trials)
            .where(
                study_trials.c.experiment_uid == experiment_uid, study_trials.c.number == row.number
            )
            .values(state=row.state, value=row.value, system_attrs=row.system_attrs)
        )
    if new:
        await session.execute(
            insert(study_trials),
            [
                {
                    "experiment_uid": experiment_uid,
                    "number": r.number,
                    "trial_name": r.trial_name,
                    "params": r.params,
                    "distributions": r.distributions,
                    "system_attrs": r.system_attrs,
                    "state": r.state,
                    "value": r.value,
                    "rung": r.rung,
                }
                for r in new
            ],
        )
    values = {"system_attrs": system_attrs, "state": state, "updated": int(time.time())}
    if exists:
        await session.execute(
            update(studies).where(studies.c.experiment_uid == experiment_uid).values(**values)
        )
    else:
        await session.execute(insert(studies).values(experiment_uid=experiment_uid, **values))


async def experiment_trials(
    session: AsyncSession, objects: Table, namespace: str, experiment: str, label: str
) -> list[dict[str, Any]]:
    """The bodies of an experiment's Trial objects, filtered by label in the database.

    The generic ``ResourceStore.list`` decodes every Trial of the namespace and filters in
    Python; with many experiments in one namespace that made each reconcile O(all trials).
    """
    label_value = objects.c.body["metadata"]["labels"][label].as_string()
    rows = (
        (
            await session.execute(
                select(objects.c.body).where(
                    objects.c.kind == "Trial",
                    objects.c.namespace == namespace,
                    label_value == experiment,
                )
            )
        )
        .scalars()
        .all()
    )
    return list(rows)
