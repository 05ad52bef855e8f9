"""``python -m services.worker``: run the worker (the same as ``creditrail worker``)."""

from services.app.worker_cli import worker

if __name__ == "__main__":
    worker()
