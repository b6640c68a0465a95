# syntax=docker/dockerfile:1
# session-broker container image.
#
# Two stages: the builder installs the package and its dependencies into a virtualenv at
# /opt/venv; the runtime stage copies only that virtualenv onto a clean python:3.11-slim, so no
# pip cache, source tree or build backend ends up in the final image. Every dependency ships
# manylinux wheels for CPython 3.11, so neither stage needs a compiler.
#
#   docker build -t session-broker:0.1.0 .
#   docker run --rm -p 8080:8080 -e SESSION_BROKER_DATABASE_URL=postgresql://... session-broker:0.1.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv /opt/venv

# Metadata first, then code: pyproject.toml names README.md as the long description.
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
# A non-editable install: the venv holds the package, its migrations and compiled bytecode
# (the runtime filesystem is read-only in Kubernetes, so .pyc files cannot be written later).
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="session-broker" \
      org.opencontainers.image.description="Session and state-handle broker for fleets of MCP gateways" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    SESSION_BROKER_DATA_DIR=/data

# A fixed numeric UID/GID so Kubernetes `runAsNonRoot` can verify it without a passwd lookup.
# /data is only used by the embedded PostgreSQL of a `docker run` without a database URL.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin broker \
    && install --directory --owner 10001 --group 10001 --mode 0750 /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /tmp
USER 10001:10001

EXPOSE 8080
# uvicorn finishes in-flight requests on SIGTERM.
STOPSIGNAL SIGTERM
# slim images have no curl: probe liveness with the interpreter we already ship.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]

ENTRYPOINT ["session-broker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
