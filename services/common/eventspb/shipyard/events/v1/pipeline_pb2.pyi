from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PipelineRunEvent(_message.Message):
    __slots__ = ("namespace", "name", "uid", "phase", "message", "started_at", "finished_at", "progress", "kfp_run_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    KFP_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    uid: str
    phase: str
    message: str
    started_at: str
    finished_at: str
    progress: str
    kfp_run_id: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ..., phase: _Optional[str] = ..., message: _Optional[str] = ..., started_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., progress: _Optional[str] = ..., kfp_run_id: _Optional[str] = ...) -> None: ...

class PipelineNodeEvent(_message.Message):
    __slots__ = ("namespace", "workflow", "workflow_uid", "node_id", "node_name", "display_name", "type", "phase", "previous_phase", "message", "cached")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_UID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workflow: str
    workflow_uid: str
    node_id: str
    node_name: str
    display_name: str
    type: str
    phase: str
    previous_phase: str
    message: str
    cached: bool
    def __init__(self, namespace: _Optional[str] = ..., workflow: _Optional[str] = ..., workflow_uid: _Optional[str] = ..., node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., display_name: _Optional[str] = ..., type: _Optional[str] = ..., phase: _Optional[str] = ..., previous_phase: _Optional[str] = ..., message: _Optional[str] = ..., cached: _Optional[bool] = ...) -> None: ...
