"""The model server every InferenceService revision runs: KServe V1 and Open Inference Protocol V2.

``python -m services.serving.modelserver --model-name X --model-dir DIR --protocol v2 --port N``.
Both protocols are always served (as KServe's python model server does); ``--protocol`` only
says which one the InferenceService asked for. ``--path-prefix`` lets the gateway forward
``/serving/{ns}/{isvc}/v2/...`` unchanged.
"""
