# Training image: the same set-up path as a workstation (scripts/setup.sh: apt, venv from
# requirements.lock, message build), on Debian 12 with Python 3.11. CPU by default; for CUDA:
#   docker build -f docker/trainer.Dockerfile --build-arg TORCH_VARIANT=cu128 -t world4rl/trainer:cu128 .
#   docker run --gpus all -v $PWD/runs:/workspace/runs world4rl/trainer:cu128 world4rl train ... --device cuda
FROM python:3.11-slim-bookworm

# cpu, or a CUDA tag of PyTorch's wheel index (cu126, cu128, ...): the CUDA wheels bring their own runtime.
ARG TORCH_VARIANT=cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PYTHON=python3.11

# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends make git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace
COPY . .
RUN bash scripts/setup.sh && rm -rf /var/lib/apt/lists/* /root/.cache/pip
RUN if [ "${TORCH_VARIANT}" != "cpu" ]; then \
        .venv/bin/pip install --no-cache-dir --force-reinstall --no-deps \
            --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch==2.13.0; \
    fi

ENV PATH=/workspace/.venv/bin:$PATH MUJOCO_GL=egl
CMD ["world4rl", "--help"]
