# The kmta image: every kmta process kind (worker, sender, dashboard, topics, send, ...) from the
# `kmta` command. Built by docker-compose.yml; `docker run --rm kmta:local --help` lists commands.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml ./
COPY kmta ./kmta
COPY schemas ./schemas
COPY streams ./streams
COPY senders ./senders
COPY dashboard ./dashboard
COPY sim ./sim
COPY ops ./ops
COPY inbound ./inbound
RUN pip install . \
    && useradd --system --create-home --home-dir /var/lib/kmta --shell /usr/sbin/nologin kmta

# SMTP delivery and the dashboard need no privileges
USER kmta
# the dashboard; every process's /metrics, /healthz, /readyz ([metrics] listen, as in compose)
EXPOSE 8050 9108
WORKDIR /var/lib/kmta
ENTRYPOINT ["kmta"]
CMD ["--help"]
