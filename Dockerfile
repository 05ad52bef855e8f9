# The creditrail image: the API (`creditrail run`, the default), the worker (`creditrail worker`) and one-shot
# commands (`creditrail migrate`) all run from it. Dependencies come pinned from requirements.lock (`make lock`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
# The pinned dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY services ./services
COPY chain ./chain
COPY contracts_abi ./contracts_abi
RUN pip install --no-deps . && rm -rf build

# Not root: an account of its own, whose home holds the SQLite file when no PostgreSQL URL is given.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/creditrail creditrail
USER creditrail
WORKDIR /var/lib/creditrail

ENV CREDITRAIL_API_HOST=0.0.0.0 \
    CREDITRAIL_API_PORT=8000
EXPOSE 8000
# The API's own health check; the worker's and the one-shot migrate's services override it (docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CREDITRAIL_API_PORT', '8000'), timeout=4)"]
CMD ["creditrail", "run"]
