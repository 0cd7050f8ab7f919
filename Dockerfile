# BrainMIA: one image for the API (`brainmia serve`), the workers (`brainmia worker`) and the
# one-off migration (`brainmia admin migrate`). See docker-compose.yml.
#
#   docker build -t brainmia .                                   # PyTorch from PyPI (CUDA on x86_64)
#   docker build -t brainmia --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#                                                                # CPU-only PyTorch, a much smaller image
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BRAINMIA_DATA_DIR=/data

# Chromium prints the PDF reports (GET /assessments/{id}/report.pdf).
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin brainmia \
    && mkdir -p /data \
    && chown brainmia:brainmia /data

WORKDIR /app

# PyTorch first, in its own layer: it is by far the largest dependency and changes least.
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"}

COPY pyproject.toml README.md ./
COPY backend backend
COPY worker worker
COPY frontend frontend
RUN pip install . \
    && brainmia --help >/dev/null

USER brainmia
VOLUME ["/data"]
EXPOSE 8000

# The API's health check is in docker-compose.yml (workers serve no HTTP).
CMD ["brainmia", "serve", "--host", "0.0.0.0", "--port", "8000"]
