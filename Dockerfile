# syntax=docker/dockerfile:1
# The auth-service image: `docker compose up -d --build` builds it (docs/deploying.md).
# pyproject.toml asks for Python >= 3.11; the image runs 3.12.
ARG PYTHON_VERSION=3.12

# --- build: the project's wheel and a wheel of every dependency --------------------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The project's wheel plus one for each dependency (an sdist-only one is built here), so the
# runtime stage installs offline and needs no compiler.
RUN pip wheel --wheel-dir /wheels .

# --- runtime ------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTH_WORKERS=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels auth-service \
    && groupadd --system --gid 10001 auth \
    && useradd --system --uid 10001 --gid auth --home-dir /app --shell /usr/sbin/nologin auth \
    && mkdir -p /app \
    && chown auth:auth /app
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]
# A tiny sh entrypoint (deploy/entrypoint.sh) reads AUTH_WORKERS at start and execs, so uvicorn
# is PID 1 and gets SIGTERM: with no command it runs
#   auth-service serve --host 0.0.0.0 --port 8000 --workers ${AUTH_WORKERS:-1}
# and a command (`auth-service migrate`, `keys list`) runs that auth-service command instead.
COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/auth-entrypoint
ENTRYPOINT ["/usr/local/bin/auth-entrypoint"]
