# listener worker image: `listener run` as PID 1 (drains on SIGTERM), `listener
# migrate` as a one-shot command, /healthz for the HEALTHCHECK. It includes the
# dashboard (the `ui` extra): `listener ui --host 0.0.0.0` serves it on 8089.
#
#   docker build -t listener .
#   docker run --rm -e DATABASE_URL=... listener migrate
#   docker run -d -e DATABASE_URL=... -p 9108:9108 listener
#
# Where no registry is reachable: build a wheelhouse on the host and a local base
# (see docs/monitoring.md, "Building without a registry"):
#   docker build --build-arg BASE_IMAGE=localhost/debian-python:bookworm \
#                --build-arg WHEELHOUSE=wheels -t listener .
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# A folder of wheels inside the build context (listener's own wheel included);
# empty: install from the package index.
ARG WHEELHOUSE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
RUN python3 -m venv /opt/listener \
 && if [ -n "$WHEELHOUSE" ]; then \
      /opt/listener/bin/pip install --no-index --find-links "/src/$WHEELHOUSE" "listener[ui]"; \
    else \
      /opt/listener/bin/pip install "/src[ui]"; \
    fi \
 && /opt/listener/bin/listener --version

FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 listener \
 && useradd --no-log-init --uid 10001 --gid listener --home-dir /app --shell /usr/sbin/nologin listener \
 && mkdir /app && chown listener:listener /app
COPY --from=build /opt/listener /opt/listener
ENV PATH=/opt/listener/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LISTENER_METRICS_PORT=9108 \
    LISTENER_METRICS_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE 9108 8089
# Exit 0 only when /healthz answers 200: the process is up and its event loop turns.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-m", "listener.healthcheck"]
# Exec form: the worker is PID 1 and receives SIGTERM itself (graceful drain).
ENTRYPOINT ["listener"]
CMD ["run", "--metrics-host", "0.0.0.0", "--log-format", "json"]
