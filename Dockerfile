# syntax=docker/dockerfile:1
# t2c-monitor as an image: the package installed from its wheel (not editable), CPU torch by default.
#   docker build -t t2c-monitor .
#   docker build -t t2c-monitor:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
# The entrypoint is the `t2c` command (`docker run t2c-monitor serve`, `... db upgrade`).
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY t2c_monitor t2c_monitor
COPY flows flows
COPY migrations migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON}-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
# torch from TORCH_INDEX (CPU or a CUDA build), everything else from PyPI
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" /wheels/*.whl && rm -rf /wheels
RUN useradd --create-home --uid 1000 t2c
USER t2c
WORKDIR /home/t2c
ENV T2C_HOME=/home/t2c/.t2c \
    PYTHONUNBUFFERED=1
HEALTHCHECK NONE
ENTRYPOINT ["tini", "--", "t2c"]
CMD ["--help"]
