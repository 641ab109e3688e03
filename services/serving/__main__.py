"""``python -m services.serving``"""

from services.common.serve import serve
from services.serving.app import create_app
from services.serving.settings import Settings

if __name__ == "__main__":
    serve(create_app, Settings())
