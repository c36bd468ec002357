# hexzd on NVIDIA GPUs, run as you, every cache in the mounted run folder (docs/guides/docker.md).
#   docker build -t hexzd .              (--build-arg EXTRAS=cuda,tensorrt for TensorRT)
#   mkdir -p runs && docker run --gpus all --init --user "$(id -u):$(id -g)" -v "$PWD/runs:/runs" hexzd
#   or: docker compose up               (compose.yaml: the same, with the GPUs reserved)
# One copy of the CUDA libraries: a slim Python and PyPI's torch, which brings the nvidia-*
# wheels it was built against. A CUDA base image would add a second, larger copy that torch
# does not load (the sizes: docs/guides/docker.md). The host needs only the NVIDIA driver and
# the NVIDIA Container Toolkit.
FROM python:3.11-slim-bookworm

ARG EXTRAS=cuda
# torch as CI tests it (.ci/run), with the nvidia-* wheels of its CUDA
ARG TORCH_VERSION=2.13.0
# the image's own user; `docker run --user UID:GID` runs as any other just as well
ARG UID=1000
ARG GID=1000

# The run folder is home, and every cache lives in it, so that whoever runs the container
# (any --user) can write them and they outlive it: the kept ladder (ratings.ladder_file,
# ~/.cache/hexzd/ladder.sqlite), the CURVE keys (~/.config/hexzd/keys), TensorRT engines,
# numba's compiled kernels, torch's and triton's kernels, CUDA's JIT cache, matplotlib's.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/hexzd/bin:$PATH \
    HOME=/runs \
    XDG_CACHE_HOME=/runs/.cache \
    HEXZD_TRT_CACHE=/runs/.cache/hexzd/tensorrt \
    NUMBA_CACHE_DIR=/runs/.cache/numba \
    TORCHINDUCTOR_CACHE_DIR=/runs/.cache/torchinductor \
    TRITON_CACHE_DIR=/runs/.cache/triton \
    CUDA_CACHE_PATH=/runs/.cache/nv \
    MPLCONFIGDIR=/runs/.cache/matplotlib

# torch first, in a layer of its own: the largest, and the one that changes least
RUN python -m venv /opt/hexzd \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}"

# The repository with its tests, installed editable: `hexzd doctor` finds the tests beside
# the package and runs its GPU tests step in the container too.
WORKDIR /opt/hexzd/src
COPY pyproject.toml README.md config.toml ./
COPY hexzd hexzd
COPY native native
COPY tui tui
COPY tests tests
# /runs is open to every user (sticky, as /tmp) so that a fresh named volume, which copies
# it, takes any --user; a bind mount keeps the host folder's own owner and mode.
RUN pip install --no-cache-dir -e ".[${EXTRAS},test]" \
 && python -m compileall -q hexzd native tui tests \
 && groupadd --gid "${GID}" hexzd \
 && useradd --uid "${UID}" --gid "${GID}" --home-dir /runs --no-create-home --shell /usr/sbin/nologin hexzd \
 && mkdir /runs \
 && chown "${UID}:${GID}" /runs \
 && chmod 1777 /runs

USER ${UID}:${GID}
WORKDIR /runs
VOLUME /runs
# `docker stop` sends SIGTERM, which the daemon takes as Ctrl-C: the workers get 20 s to
# finish, then the last commit. Give it time: docker stop -t 45 (compose.yaml says so).
ENTRYPOINT ["hexzd"]
CMD ["start", "--headless"]
