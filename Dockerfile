# One image for every shipyard process; docker-compose.yml and the Helm chart pick the
# process with the command (python -m gateway, python -m services.notebook, ...).
FROM python:3.11-slim

# bubblewrap: the local workload runtime sandboxes each workload with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, pinned by constraints.txt, so source edits do not reinstall them: the base
# set and the `kubernetes` extra (kubernetes-asyncio: SHIPYARD_RUNTIME=kubernetes, the chart's
# default).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['kubernetes']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
 && useradd --uid 10001 --create-home shipyard \
 && mkdir -p /var/lib/shipyard \
 && chown shipyard /var/lib/shipyard

ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    SHIPYARD_HOST=0.0.0.0 \
    SHIPYARD_STATE_DIR=/var/lib/shipyard

USER shipyard
EXPOSE 8080 8181 8182 8183 8184
CMD ["python", "-m", "gateway"]
