"""The AutoML service: Katib-compatible Experiments, Trials and Suggestions."""
