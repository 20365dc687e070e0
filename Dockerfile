# syntax=docker/dockerfile:1
# Two images from one file (see docker-compose.yml):
#   docker build --target api    -t mlqueue-api .      # the Flask API and the client: no torch, small
#   docker build --target worker -t mlqueue-worker .   # + torch, scikit-learn, pandas; CPU torch by default
# CUDA workers: --build-arg TORCH_INDEX_URL=https://pypi.org/simple (PyPI's Linux x86_64 torch wheels bundle
# CUDA), or a specific build such as https://download.pytorch.org/whl/cu126. The host needs the NVIDIA driver
# and the NVIDIA Container Toolkit; the image needs no CUDA toolkit of its own.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLQ_HOME=/var/lib/mlqueue
# A fixed non-root user; the artifact directory is created owned by it so a fresh named volume mounted there
# inherits that owner.
RUN useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin mlq \
    && mkdir -p /var/lib/mlqueue \
    && chown mlq:mlq /var/lib/mlqueue
WORKDIR /home/mlq

# Build the project's wheel once; both images install it (no source tree, no editable install).
FROM base AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY training ./training
COPY mlqueue ./mlqueue
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM base AS api
COPY --from=build /wheels /wheels
# The base install and [onnx] (its model-upload check runs in a child process): the API process never loads torch.
RUN pip install "$(ls /wheels/*.whl)[onnx]" && rm -rf /wheels
USER mlq
EXPOSE 8000
CMD ["mlq", "api", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]

FROM base AS worker
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
COPY --from=build /wheels /wheels
# torch first, from the chosen index, so the [worker] extra finds it installed and keeps that build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install "$(ls /wheels/*.whl)[worker]" \
    && rm -rf /wheels
USER mlq
CMD ["mlq", "worker", "--queues", "train,inference", "--devices", "auto"]
