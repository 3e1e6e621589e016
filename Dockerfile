# syntax=docker/dockerfile:1
# semarize-connector image: `docker build -t semarize-connector .`
# Build stage installs the package and its dependencies (all from wheels: confluent-kafka's
# wheels carry librdkafka) into a venv; the final stage copies only that venv onto the same
# slim base: no compiler, no pip cache, no sources, a non-root user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# README.md* : the readme is optional for the build.
COPY pyproject.toml README.md* ./
COPY connector ./connector
RUN pip install --upgrade pip \
    && pip install --only-binary=confluent-kafka,orjson,aiohttp . \
    && semarize-connector --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="semarize-connector" \
      org.opencontainers.image.description="Kafka -> Semarize Runs API -> Kafka connector" \
      org.opencontainers.image.licenses="Apache-2.0"
# The UID/GID the Helm chart runs as (podSecurityContext.runAsUser / runAsGroup).
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin connector
COPY --from=build /opt/venv /opt/venv
# Nothing is written at run time: bytecode was compiled at install, logs go to stdout.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# ops (/metrics, /healthz, /readyz) and the optional webhook receiver.
EXPOSE 8000 8080
ENTRYPOINT ["semarize-connector"]
CMD ["run"]
