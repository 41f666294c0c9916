# The marketpipe image: every flow (`python -m bytewax.run flows.<name>:flow`), the recovery init
# (`python -m connectors.recovery`) and the websocket broadcaster (`python -m broadcaster`, the default command).
#   docker build -t registry.example.com/marketpipe:0.1.0 .
# Kubernetes manifests: k8s/ (k8s/README.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/marketpipe
ENV PATH=/opt/marketpipe/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer (pyproject's pins, the transitive ones from constraints.txt), so that a
# code change rebuilds only the layers below.
COPY pyproject.toml k8s/image/constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --only-binary=:all: --constraint constraints.txt --requirement requirements.txt
# The project itself (no tests, no recorded data: see .dockerignore).
COPY README.md ./
COPY flows ./flows
COPY operators ./operators
COPY connectors ./connectors
COPY schemas ./schemas
COPY broadcaster ./broadcaster
COPY embedded ./embedded
COPY benchmarks ./benchmarks
COPY evm_rpc ./evm_rpc
COPY simulator ./simulator
RUN pip install --no-deps --constraint constraints.txt . \
    && cd / && python -c "import flows.normalize_cex, connectors.recovery, broadcaster.app"

FROM ${PYTHON_IMAGE}
# A fixed non-root user (the manifests run as 10001 and give volumes to group 10001), and the directories the
# pods mount volumes on (hostfile, recovery partitions, dataflow API cache).
RUN groupadd --system --gid 10001 marketpipe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/marketpipe --create-home \
        --shell /usr/sbin/nologin marketpipe \
    && mkdir -p /etc/bytewax /var/bytewax/recovery /var/bytewax/api-cache \
    && chown -R 10001:10001 /etc/bytewax /var/bytewax
COPY --from=build /opt/marketpipe /opt/marketpipe
ENV PATH=/opt/marketpipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    BROADCASTER_HOST=0.0.0.0
WORKDIR /home/marketpipe
USER 10001:10001
# 8080 broadcaster HTTP/websocket; 3030 Bytewax dataflow API (/metrics); 9999 Bytewax process-to-process.
EXPOSE 8080 3030 9999
CMD ["python", "-m", "broadcaster"]
