# The web application (the web extra only: no PyTorch). Build and run:
#   docker build -t hematovision .
#   docker run --rm -v hv-data:/data hematovision hematovision users add admin --role admin
#   docker run -p 5000:5000 -v hv-data:/data hematovision
# BASE: any Debian-like image with Python 3.11+ and its venv module.
ARG BASE=python:3.11-slim
FROM ${BASE}

# set by builds that must trust a local CA to reach the package registries (see tests)
ARG PIP_CERT
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HEMATOVISION_DATA_DIR=/data

WORKDIR /app
# The pinned dependencies first, in a layer of their own: a change to the source rebuilds only
# the small layer below, not the whole install (tomllib reads the list pip would resolve).
COPY pyproject.toml constraints.txt ./
RUN python3 -m venv /opt/venv \
    && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['web']))" > /tmp/web.txt \
    && pip install --no-compile -c constraints.txt -r /tmp/web.txt \
    && useradd --system --create-home --uid 10001 hematovision \
    && mkdir -p /data && chown hematovision /data
COPY README.md LICENSE ./
COPY src ./src
RUN pip install --no-compile --no-deps .

USER hematovision
VOLUME /data
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4)"
# every setting is an environment variable HEMATOVISION_* (README, "Settings"); a server
# reachable from other machines needs an account first (see above)
CMD ["hematovision", "serve", "--host", "0.0.0.0", "--port", "5000", "--workers", "2"]
