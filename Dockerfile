# One image, many commands: the same build runs the web server, the Celery worker and beat
# (see docker-compose.yml). Configuration comes from the environment only; no secret is baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POOLHUB_VAR_DIR=/app/var \
    PORT=8000 \
    LOG_FORMAT=json \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics

WORKDIR /app

COPY requirements.txt ./
RUN python -m pip install -r requirements.txt

COPY . .

# Static files (admin, API docs page) are collected at build time and served by whitenoise.
# The image installs the runtime set only (requirements.txt): no embedded servers, no test tools.
# Importing the settings writes nothing, so no key is left behind by collectstatic.
RUN python manage.py collectstatic --noinput -v 0 \
    && rm -rf "$PROMETHEUS_MULTIPROC_DIR" \
    && useradd --system --uid 10001 --home-dir /app poolhub \
    && chown -R poolhub /app/var

USER poolhub
EXPOSE 8000

# The default command is the web process; compose overrides it for worker, beat and migrate.
# The metrics directory starts empty (docs/configuration.md, PROMETHEUS_MULTIPROC_DIR).
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec uvicorn poolhub.asgi:application --host 0.0.0.0 --port ${PORT} --proxy-headers --ws websockets-sansio --lifespan off --no-server-header"]
