# Encoder, GPU: torch from a CUDA index (its wheels carry the CUDA runtime) and onnxruntime-gpu.
# The node needs only the NVIDIA driver and device plugin. No weights inside (see encoder-cpu).
# Build from the project root:
#   docker build -f k8s/images/encoder-gpu.Dockerfile -t qbank-encoder:gpu .
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 JINA_LOG_LEVEL=INFO \
    HF_HOME=/models/hf NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
# Only the server package: no client, no devtools, no jina client patch (nothing here runs clip_client).
COPY pyproject.toml constraints.txt README.md ./
COPY src/qbank ./src/qbank
# constraints.txt pins the +cpu torch for CPU hosts; here the CUDA build of the same version.
RUN pip install "torch==2.13.0" --index-url "$TORCH_INDEX" \
    && grep -v '^torch==' constraints.txt > /tmp/constraints-gpu.txt \
    && pip install -c /tmp/constraints-gpu.txt ".[encoder-gpu]" && useradd --uid 10001 --no-create-home qbank \
    && mkdir -p /models && chown 10001 /models
COPY executors/clip_encoder/config.yml ./executors/clip_encoder/config.yml
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["jina"]
CMD ["executor", "--uses", "executors/clip_encoder/config.yml", "--port", "8080"]
