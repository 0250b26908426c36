# Encoder, CPU: the CLIP executor with torch (CPU wheel) and ONNX Runtime. No weights inside: a
# volume or the fetch-model init container brings them to /models (k8s/base/encoder.yaml).
# Build from the project root:
#   docker build -f k8s/images/encoder-cpu.Dockerfile -t qbank-encoder:cpu .
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 JINA_LOG_LEVEL=INFO \
    HF_HOME=/models/hf
WORKDIR /app
# Only the server package: no client, no devtools, no jina client patch (nothing here runs clip_client).
COPY pyproject.toml constraints.txt README.md ./
COPY src/qbank ./src/qbank
# The +cpu wheel first, from PyTorch's CPU index: never a CUDA build in the CPU image.
RUN pip install "torch==2.13.0+cpu" --index-url "$TORCH_INDEX" \
    && pip install -c constraints.txt ".[encoder]" && useradd --uid 10001 --no-create-home qbank \
    && mkdir -p /models && chown 10001 /models
COPY executors/clip_encoder/config.yml ./executors/clip_encoder/config.yml
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["jina"]
CMD ["executor", "--uses", "executors/clip_encoder/config.yml", "--port", "8080"]
