# Indexer: the Milvus executor (pymilvus). No model, no torch: it only records the model's name.
# Build from the project root:
#   docker build -f k8s/images/indexer.Dockerfile -t qbank-indexer .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 JINA_LOG_LEVEL=INFO
WORKDIR /app
# Only the server package: no client, no devtools, no jina client patch (nothing here runs clip_client).
COPY pyproject.toml constraints.txt README.md ./
COPY src/qbank ./src/qbank
RUN pip install -c constraints.txt ".[indexer]" && useradd --uid 10001 --no-create-home qbank \
    && mkdir -p /app/data && chown 10001 /app/data
COPY executors/milvus_indexer/config.yml ./executors/milvus_indexer/config.yml
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["jina"]
CMD ["executor", "--uses", "executors/milvus_indexer/config.yml", "--port", "8080"]
