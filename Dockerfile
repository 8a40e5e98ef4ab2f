# One image for every roomwarden process; PROCESS (or the command) picks a Procfile entry:
#   docker run -e PROCESS=worker ... roomwarden
# See docs/deploy.md for the variables each process needs.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/roomwarden-metrics \
    PORT=8080

WORKDIR /app
COPY pyproject.toml README.md LICENSE alembic.ini Procfile ./
COPY worker ./worker
COPY webhooks ./webhooks
COPY roomwarden ./roomwarden
COPY emulator ./emulator
COPY migrations ./migrations
COPY scripts/run-process ./scripts/run-process

RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app roomwarden

USER roomwarden
EXPOSE 8080
ENTRYPOINT ["/app/scripts/run-process"]
CMD ["web"]
