# syntax=docker/dockerfile:1
# paygate: one image for every process of the service (consumer, facade, acquirer, topics).
#   docker build -t paygate:local .
#   docker run --rm paygate:local --help
# The stack (Kafka, PostgreSQL, the paygate processes) is docker-compose.yml; see docs/docker.md.

# ---- builder: install the package and its runtime dependencies into a venv ----------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Everything the build needs (pyproject.toml, README.md, the packages); .dockerignore keeps
# out local venvs, caches, databases and the tests.
COPY . .
# No dev extras: the runtime image carries the service, not its tools.
RUN pip install .

# ---- runtime: the venv on a clean slim image, run as an unprivileged user -----------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed numeric uid/gid, so volume ownership and runAsNonRoot checks are predictable.
# /var/lib/paygate holds the state a process writes: the default SQLite files, the
# self-signed TLS certificate (tls/), the sandbox acquirer's ledger (ledger/) and the
# Alipay simulator's generated test keys in development stacks (alipay-dev/). The
# directories exist in the image, owned by paygate, so a named volume mounted on them
# starts with the right owner.
RUN groupadd --system --gid 10001 paygate \
    && useradd --system --uid 10001 --gid paygate --home-dir /var/lib/paygate \
        --no-create-home --shell /usr/sbin/nologin paygate \
    && install -d -o paygate -g paygate -m 0750 /var/lib/paygate /var/lib/paygate/ledger \
    && install -d -o paygate -g paygate -m 0700 /var/lib/paygate/tls /var/lib/paygate/alipay-dev

COPY --from=builder /opt/venv /opt/venv

WORKDIR /var/lib/paygate
ENV PAYGATE_TLS_DIR=/var/lib/paygate/tls \
    PAYGATE_ACQUIRER_LEDGER=/var/lib/paygate/ledger/sandbox-ledger.db

USER 10001:10001

# The HTTPS facade (the default command). The consumer's metrics listen on 9102 and the
# sandbox acquirer on 8081 when those commands run.
EXPOSE 8443

ENTRYPOINT ["paygate"]
CMD ["facade"]
