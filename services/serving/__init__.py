"""The serving service: KServe-compatible InferenceServices and the model server."""
