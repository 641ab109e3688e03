"""The shared kernel every shipyard service is built on."""
