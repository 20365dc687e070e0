"""The gunicorn target `api.wsgi:app`: the process edge, where settings are read from the environment."""

from api import create_app
from store.settings import Settings

app = create_app(Settings.from_env())
