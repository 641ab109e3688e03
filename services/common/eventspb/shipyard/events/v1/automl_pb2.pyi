from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrialEvent(_message.Message):
    __slots__ = ("namespace", "experiment", "trial", "experiment_uid", "condition", "reason", "message", "has_objective", "objective_value")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_UID_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    experiment: str
    trial: str
    experiment_uid: str
    condition: str
    reason: str
    message: str
    has_objective: bool
    objective_value: float
    def __init__(self, namespace: _Optional[str] = ..., experiment: _Optional[str] = ..., trial: _Optional[str] = ..., experiment_uid: _Optional[str] = ..., condition: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., has_objective: _Optional[bool] = ..., objective_value: _Optional[float] = ...) -> None: ...

class TrialMetricsEvent(_message.Message):
    __slots__ = ("namespace", "trial", "experiment", "metrics")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    trial: str
    experiment: str
    metrics: _containers.RepeatedCompositeFieldContainer[MetricValue]
    def __init__(self, namespace: _Optional[str] = ..., trial: _Optional[str] = ..., experiment: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[MetricValue, _Mapping]]] = ...) -> None: ...

class MetricValue(_message.Message):
    __slots__ = ("name", "value", "step", "timestamp")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    step: int
    timestamp: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., step: _Optional[int] = ..., timestamp: _Optional[str] = ...) -> None: ...
