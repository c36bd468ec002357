# hexzd on an NVIDIA GPU. Build:  docker build -t hexzd .
# Run:    docker run --gpus all -v "$PWD/run:/run/hexzd" hexzd
# Add --build-arg EXTRAS=cuda,tensorrt for TensorRT inference.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ARG EXTRAS=cuda
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/hexzd
ENV PATH=/opt/hexzd/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md config.toml ./
COPY hexzd hexzd
COPY native native
COPY tui tui
RUN pip install ".[${EXTRAS}]"

WORKDIR /run/hexzd
VOLUME /run/hexzd
ENTRYPOINT ["hexzd"]
CMD ["start", "--headless"]
