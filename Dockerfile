# Gazette: one image for every process (web, worker, beat, migrate).
# Build stage: turn the source into a wheel with its dependencies' wheels.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY src ./src
COPY worker ./worker
COPY templates ./templates
COPY examples ./examples
RUN python -m build --wheel --outdir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/gazette-*.whl

# Final stage: only the installed wheels, no compilers, a non-root user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GAZETTE_VAR_DIR=/var/lib/gazette
RUN useradd --system --create-home --home-dir /var/lib/gazette --uid 10001 gazette
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels gazette \
 && rm -rf /wheels
USER gazette
WORKDIR /var/lib/gazette
EXPOSE 8000
# Every service names its own command (see docker-compose.yml); this is the web default.
CMD ["gazette", "serve", "--host", "0.0.0.0", "--port", "8000"]
