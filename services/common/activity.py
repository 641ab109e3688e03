"""The data-plane activity report, from the gateway to the serving service.

Only the gateway sees inference traffic, so it tells the serving service which
InferenceServices are in use: every ``SHIPYARD_ACTIVITY_REPORT_SECONDS`` one core NATS
message per InferenceService that had requests, has requests in flight, or has requests
held while it is scaled to zero (sent at once when the first one is held). Core NATS,
not JetStream: a report is only worth anything for a few seconds, the next one repeats
it, and the scale-to-zero grace period spans many reports, so losing one is harmless and
nothing needs storing or replaying.

The payload is a small JSON object (this module is its schema); it is not a protobuf in
``proto/`` because it is never stored or replayed and both ends live in this repository.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

#: Outside ``shipyard.<service>.>``, which the services' JetStream streams capture.
SUBJECT = "shipyard.activity.inferenceservice"


@dataclass(frozen=True)
class Activity:
    """What the gateway saw of one InferenceService since its last report."""

    namespace: str
    name: str
    requests: int = 0  # requests that started since the last report
    in_flight: int = 0  # requests forwarded and not yet answered, now
    waiting: int = 0  # requests held for activation, now
    concurrency: int = 0  # the most requests in flight at once since the last report
    seconds: float = 0.0  # the span ``requests`` were counted over (0: a report sent at once)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Activity:
        """Raises ValueError on anything but a well-formed report."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("activity report is not an object")
        namespace, name = raw.get("namespace"), raw.get("name")
        if not isinstance(namespace, str) or not isinstance(name, str):
            raise ValueError("activity report without namespace and name")
        requests, in_flight, waiting, concurrency = counts = [
            raw.get(k, 0) for k in ("requests", "in_flight", "waiting", "concurrency")
        ]
        if not all(isinstance(c, int) and c >= 0 for c in counts):
            raise ValueError("activity counts must be non-negative integers")
        seconds = raw.get("seconds", 0.0)
        if not isinstance(seconds, int | float) or not 0 <= seconds < 3600:
            raise ValueError("activity seconds must be a number of seconds under an hour")
        return cls(namespace, name, requests, in_flight, waiting, concurrency, float(seconds))
