# One image for worker, beat, Flower and the CLI.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lifecycle ./lifecycle
COPY workers ./workers
COPY tasks ./tasks
COPY models ./models
COPY schedules ./schedules
RUN pip install --no-cache-dir . && useradd --system --uid 1000 lifecycle
# Not root: the worker deletes files, and must only touch what the mounted roots allow.
USER lifecycle
ENTRYPOINT ["lifecycle"]
