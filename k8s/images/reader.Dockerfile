# Reader: the OCR executor (rapidocr; its PP-OCRv6 models ship inside the wheel). No torch.
# Build from the project root:
#   docker build -f k8s/images/reader.Dockerfile -t qbank-reader .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 JINA_LOG_LEVEL=INFO
WORKDIR /app
# Only the server package: no client, no devtools, no jina client patch (nothing here runs clip_client).
COPY pyproject.toml constraints.txt README.md ./
COPY src/qbank ./src/qbank
RUN pip install -c constraints.txt ".[ocr]" && useradd --uid 10001 --no-create-home qbank
COPY executors/reader/config.yml ./executors/reader/config.yml
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["jina"]
CMD ["executor", "--uses", "executors/reader/config.yml", "--port", "8080"]
