"""Settings of the notebook service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "notebook"
    port: int = 8181
    # Culling (Kubeflow's ENABLE_CULLING / CULL_IDLE_TIME / IDLENESS_CHECK_PERIOD, in seconds):
    # 0 turns it off, the default, as in Kubeflow.
    notebook_cull_idle_seconds: float = 0
    notebook_cull_check_period_seconds: float = 60
    # How long a starting server may take to pass its readiness probe before the controller
    # stops waiting for it in the background (the periodic resync still watches it).
    notebook_ready_timeout_seconds: float = 300
    # The Jupyter web app's spawner configuration (Kubeflow's spawner_ui_config.yaml): a YAML
    # file that replaces the built-in one (services/notebook/jwa_spawner_ui_config.yaml).
    jwa_spawner_ui_config: str = ""
