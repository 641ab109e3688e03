"""Small stand-ins for the training programs in Kubeflow's examples (run by the examples/)."""
