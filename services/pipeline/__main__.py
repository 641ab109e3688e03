"""``python -m services.pipeline``"""

from services.common.serve import serve
from services.pipeline.app import create_app
from services.pipeline.settings import Settings

if __name__ == "__main__":
    serve(create_app, Settings())
