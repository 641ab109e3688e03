"""shipyard's microservices: notebook, automl, pipeline and serving, plus their shared kernel."""
