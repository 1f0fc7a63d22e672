# One image for every eventpipe process; the command picks which (edge, worker, sink).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY eventpipe eventpipe
COPY producers producers
COPY streams streams
COPY sinks sinks
COPY launch launch
COPY replay replay
COPY schemas schemas
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["eventpipe"]
