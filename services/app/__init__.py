"""The top floor: composition. The app that mounts every domain's router (``app.py``), the list of jobs the worker
runs (``jobs.py``), every domain's tables gathered into one metadata for Alembic (``models.py``) and the worker's
commands (``worker_cli.py``). Only entry points import it (services.cli, services.dev, ``python -m services.worker``,
services/migrations/env.py, tests); nothing below imports it, so every arrow of the house runs downward from here.
"""
