"""The gunicorn target `api.wsgi:app`: the process edge, where settings are read from the environment."""

from api import create_app
from store import redaction
from store.settings import Settings

settings = Settings.from_env()
redaction.install(settings)  # before anything logs: credentials never reach a log line
app = create_app(settings)
