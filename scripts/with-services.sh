#!/usr/bin/env bash
# Run a command with SHIPYARD_TEST_* exported by ensure-services.sh; stop any throwaway
# Postgres/NATS it started when the command ends, however it ends.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exports="$("$here/ensure-services.sh")"
eval "$exports"
if [ -n "${SHIPYARD_TEST_SERVICES_DIR:-}" ]; then
    trap '"$here/ensure-services.sh" --stop "$SHIPYARD_TEST_SERVICES_DIR"' EXIT
fi
# Not exec: the EXIT trap must run after the command.
"$@"
