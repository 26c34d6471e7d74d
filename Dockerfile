# The gatekeeper proxy image (also runs `gatekeeper index` and, in compose.yaml, the Chroma
# server: chromadb is a dependency). Build:  docker build -t gatekeeper .
#
# torch is installed first, CPU only, so pip never pulls a multi-GB CUDA build (the Makefile
# does the same when given TORCH_INDEX_URL). torch==2.13.0 is the version this project is
# developed with; on the development machines it comes from their own pip configuration.
# TORCH_INDEX_URL points pip at PyTorch's CPU wheel index; set it to your mirror (or to
# https://pypi.org/simple) if that index lacks the version.
FROM python:3.11-slim

ARG TORCH=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    GATEKEEPER_LOGGING__FORMAT=json

WORKDIR /src
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH}"
COPY pyproject.toml README.md ./
COPY gatekeeper ./gatekeeper
COPY configs ./configs
COPY eval ./eval
# Keep the torch just installed (pinned again so the resolver cannot swap it for another build).
RUN pip install "${TORCH}" ".[all]" && rm -rf /src

# Not root; no state in the image or the container (the exemplars live in the Chroma server).
RUN useradd --create-home --uid 10001 gatekeeper
USER gatekeeper
WORKDIR /home/gatekeeper
# The default model's ONNX Runtime graph (embedding.runtime auto/onnx), exported here once into
# ~/.cache/gatekeeper instead of at every container start.
RUN python -c "from gatekeeper.embedding import LocalEmbedder; \
from gatekeeper.settings import EmbeddingSettings; LocalEmbedder(EmbeddingSettings()).load()"

EXPOSE 8080
# The catalog is the installed one (/usr/local/share/gatekeeper/configs/intents/shop.yaml)
# unless GATEKEEPER_CATALOG names another; every replica must name the same path.
# On 0.0.0.0 `serve` refuses to start without inbound keys: set GATEKEEPER_SERVER__API_KEYS
# (or GATEKEEPER_SERVER__ALLOW_OPEN=true behind something that authenticates clients).
CMD ["gatekeeper", "serve", "--host", "0.0.0.0", "--port", "8080"]
