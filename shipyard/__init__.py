"""shipyard's command line and Python client."""
