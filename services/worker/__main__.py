"""``python -m services.worker``: run the worker (the same as ``creditrail worker``)."""

from services.worker.cli import worker

if __name__ == "__main__":
    worker()
