"""``python -m services.automl``"""

from services.automl.app import create_app
from services.automl.settings import Settings
from services.common.serve import serve

if __name__ == "__main__":
    serve(create_app, Settings())
