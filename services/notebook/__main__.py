"""``python -m services.notebook``"""

from services.common.serve import serve
from services.notebook.app import create_app
from services.notebook.settings import Settings

if __name__ == "__main__":
    serve(create_app, Settings())
