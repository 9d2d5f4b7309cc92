# syntax=docker/dockerfile:1
# One image for all six services; each Deployment picks its service with `args: ["-m", "services.<name>"]`.
#   docker build -t order-platform .
#   docker run --rm order-platform -m services.order

# --- build: wheels for the project and its runtime dependencies (no dev or local extras) ---
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package is built from; devstack/ (the local stack) and tests/ stay out of the image.
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
# Every dependency ships a manylinux wheel for CPython 3.11, so no compiler is needed here.
RUN pip wheel --wheel-dir /wheels .

# --- runtime ---
FROM python:3.11-slim AS runtime

# The root filesystem is read-only in the pods: no .pyc writes, and HOME on the /tmp emptyDir.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The numeric ids match the Deployments' securityContext (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

# Mounted rather than copied, so the wheels never become a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels order-platform

WORKDIR /app
USER 10001:10001

ENTRYPOINT ["python"]
# No default service: starting the image without naming one fails with this message.
CMD ["-c", "import sys; sys.exit('order-platform: name a service, e.g. `-m services.order` (order, inventory, payment, fraud, notification, analytics)')"]
