# One image for every streamrec process: the API (gunicorn), the consumers, the trainer.
# docker-compose.yml picks the process with `command:` (a `streamrec` CLI command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp: OpenMP runtime of faiss-cpu and implicit.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY core ./core
COPY online_models ./online_models
COPY index ./index
COPY offline ./offline
COPY infra ./infra
COPY consumers ./consumers
COPY api ./api
COPY cli ./cli
COPY data ./data
# Editable install: templates, static files and the shipped data stay where the code finds them.
# EXTRAS picks optional parts, e.g. `docker build --build-arg EXTRAS=neural,spark .`:
# `neural` (the SASRec source) takes PyTorch's CPU build from its own index first (a plain
# `torch` requirement pulls a CUDA build of several GB); `spark` needs a Java runtime.
ARG EXTRAS=""
RUN case ",$EXTRAS," in *,spark,*) \
        apt-get update && apt-get install -y --no-install-recommends default-jre-headless \
        && rm -rf /var/lib/apt/lists/* ;; esac \
 && case ",$EXTRAS," in *,neural,*) \
        pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu ;; esac \
 && pip install -e ".${EXTRAS:+[$EXTRAS]}"

RUN useradd --create-home --uid 10001 streamrec \
 && mkdir -p /var/lib/streamrec /tmp/prometheus \
 && chown streamrec /var/lib/streamrec /tmp/prometheus
USER streamrec

ENV STREAMREC_STATE_DIR=/var/lib/streamrec \
    STREAMREC_DATA_DIR=/app/data \
    STREAMREC_API_HOST=0.0.0.0 \
    STREAMREC_API_PORT=8000

# 8000: API (and its /metrics); 9100: consumers' /metrics.
EXPOSE 8000 9100

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1

CMD ["streamrec", "serve", "--host", "0.0.0.0", "--port", "8000"]
