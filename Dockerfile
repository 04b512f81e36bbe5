# One image for worker, beat, Flower and the CLI.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The runtime lock (scripts/lock.sh), hash-checked, in its own layer so a code change reuses it.
# No demo extra: a production worker never seeds fake members.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY lifecycle ./lifecycle
COPY workers ./workers
COPY tasks ./tasks
COPY schedules ./schedules
COPY models ./models

# Built by the locked setuptools: no resolution, no unpinned build backend fetched.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && groupadd --system --gid 1000 lifecycle \
 && useradd --system --uid 1000 --gid lifecycle --home-dir /var/lib/lifecycle --no-create-home \
      lifecycle \
 && install -d -o lifecycle -g lifecycle -m 0750 /var/lib/lifecycle /srv/uploads
# A named volume starts as a copy of the image's directory at its mount point, owner included:
# every path docker-compose.yml mounts must exist here, owned by the user below, or the worker
# cannot delete uploads and Flower cannot write its database. Keep this list in step with the
# volumes there (tests/workers/test_compose.py checks it).
# Not root: the worker deletes files, and must only touch what the mounted roots allow.
USER lifecycle
ENTRYPOINT ["lifecycle"]
