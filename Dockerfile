# One image for the Tokentrail collector, capture proxy and dashboards.
#
#   docker build -t tokentrail .
#   docker run --rm -p 4318:4318 -v tokentrail-data:/data tokentrail serve --host 0.0.0.0
#
# The command is `tokentrail <subcommand>`; compose.yaml picks the subcommand per service.
FROM python:3.11-slim

ARG UV_VERSION=0.13.9

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself. gcc is here only to build the C extensions (the
# OTLP decoder ingest/_otlp_native.c, about 4x faster than upb, and the Arrow
# map flattener ingest/_rows_native.c) and leaves with its layer; the import
# check fails the build rather than ship the slower fallback.
COPY . .
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && uv sync --frozen --no-dev \
    && /app/.venv/bin/python -c "import ingest._otlp_native, ingest._rows_native" \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

# Unprivileged runtime user. /data holds the collector's admin.key and spool, or the
# proxy's CA and spool; a named volume mounted there inherits this ownership.
RUN groupadd --system --gid 10001 tokentrail \
    && useradd --system --uid 10001 --gid tokentrail --create-home \
       --home-dir /home/tokentrail --shell /usr/sbin/nologin tokentrail \
    && mkdir -p /data \
    && chown tokentrail:tokentrail /data

ENV PATH="/app/.venv/bin:${PATH}" \
    TOKENTRAIL_DATA_DIR=/data \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# Numeric, so runtimes can verify it is not root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001

# collector / OTLP 4318 · proxy 8080 · dashboards 8501
EXPOSE 4318 8080 8501

ENTRYPOINT ["/app/.venv/bin/tokentrail"]
CMD ["serve", "--host", "0.0.0.0", "--port", "4318"]
