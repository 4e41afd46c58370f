# csna in a container: `docker build -t csna .` then `docker run --rm -v "$PWD/runs:/work/runs" csna`
# trains on IHDP (replication 0) and leaves the run directory under ./runs.
#
# CPU (default): python:3.11-slim and the CPU wheel of the pinned torch (pyproject.toml).
# CUDA: pass a CUDA base image and the matching PyTorch wheel index, e.g.
#   docker build -t csna:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#   docker run --rm --gpus all -v "$PWD/runs:/work/runs" csna:cuda
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/csna \
    PATH=/opt/csna/bin:$PATH

# A CUDA base image has no Python: take the distribution's (>= 3.11 on Ubuntu 24.04).
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The same install as the README (`pip install .`), with torch's wheel index added so that the
# pinned torch==2.13.0 comes as the CPU (or the chosen CUDA) build.
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" . \
    && python -c "import csna, torch; print('csna', csna.__version__, 'torch', torch.__version__)"

# Not root; a UID of its own (1000 is taken by the "ubuntu" user of the CUDA images).
RUN groupadd --gid 10001 csna \
    && useradd --create-home --uid 10001 --gid 10001 csna \
    && mkdir -p /work/runs \
    && chown -R 10001:10001 /work
USER 10001:10001
WORKDIR /work

CMD ["csna", "train"]
