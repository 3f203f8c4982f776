# One image for every node; the command line picks the data directory and role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY node ./node
COPY federation ./federation
COPY config ./config
RUN pip install --no-cache-dir .
ENV SUPNET_LOG_LEVEL=INFO
ENTRYPOINT ["supnet"]
