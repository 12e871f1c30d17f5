# gradserve: a slim, non-root image of the HTTP service.
#   docker build -t gradserve .
#   docker run -p 8000:8000 -v gradserve-data:/data gradserve          (embedded SQLite store in /data)
# Several replicas behind nginx with Redis as the shared store: docker-compose.yml.

ARG PYTHON_IMAGE=python:3.12-slim

# ---- build: install the project and its dependencies into a virtual environment ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY frontends ./frontends
COPY service ./service
RUN /opt/venv/bin/pip install .

# ---- runtime: the virtual environment only; no compilers, no sources, no root ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRADSERVE_HOST=0.0.0.0 \
    GRADSERVE_PORT=8000 \
    GRADSERVE_DATA_DIR=/data
RUN groupadd --system --gid 10001 gradserve \
    && useradd --system --uid 10001 --gid gradserve --no-create-home --shell /usr/sbin/nologin gradserve \
    && mkdir /data && chown gradserve:gradserve /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["gradserve", "serve"]
