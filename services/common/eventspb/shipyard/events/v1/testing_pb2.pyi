from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TestPing(_message.Message):
    __slots__ = ("id", "n")
    ID_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    id: str
    n: int
    def __init__(self, id: _Optional[str] = ..., n: _Optional[int] = ...) -> None: ...
