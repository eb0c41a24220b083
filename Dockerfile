# syntax=docker/dockerfile:1
# The service's image: the wheel built in one stage, installed in a slim runtime stage that
# runs as a non-root user. `docker build -t auth-service .`; see README "Deploying".
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home auth
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER auth
WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    AUTH_WORKERS=1 \
    AUTH_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"]
# `auth-service serve` with --workers from AUTH_WORKERS; extra arguments are appended.
ENTRYPOINT ["sh", "-c", "exec auth-service serve --host 0.0.0.0 --port 8000 --workers \"${AUTH_WORKERS}\" \"$@\"", "auth-service"]
