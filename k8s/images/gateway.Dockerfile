# Gateway: jina's gRPC + HTTP + WebSocket gateway with qbank's token check (src/qbank/service/gateway.py).
# No model, no torch. Build from the project root:
#   docker build -f k8s/images/gateway.Dockerfile -t qbank-gateway .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 JINA_LOG_LEVEL=INFO
WORKDIR /app
# Only the server package: no client, no devtools, no jina client patch (nothing here runs clip_client).
COPY pyproject.toml constraints.txt README.md ./
COPY src/qbank ./src/qbank
RUN pip install -c constraints.txt . && useradd --uid 10001 --no-create-home qbank
COPY flow.yml ./
USER 10001
EXPOSE 51000 51001 51002 9090
ENTRYPOINT ["jina"]
CMD ["gateway", "--uses", "QbankGateway", "--py-modules", "qbank.service.gateway", "--protocol", "GRPC", "HTTP", "WEBSOCKET", "--port", "51000", "51001", "51002"]
