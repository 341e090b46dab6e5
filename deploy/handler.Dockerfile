# The example gateway handler (examples/gateway-handler/handler.py) as an image, for
# deploy/compose.yaml. From the repository's root:
#
#   docker build -f deploy/handler.Dockerfile -t chinwag-handler:0.1.0 .
FROM python:3.12-slim-bookworm
# The one package the handler needs, the version the tests run it with (tests/requirements.txt).
RUN pip install --no-cache-dir redis==6.4.0
COPY examples/gateway-handler/handler.py /app/handler.py
# The image's unprivileged "nobody", by number.
USER 65534:65534
# It installs no SIGTERM handler, and the kernel ignores a signal's default action
# for PID 1: run it under an init (compose: `init: true`) so that a stop ends it
# at once instead of after the stop timeout.
ENTRYPOINT ["python3", "-u", "/app/handler.py"]
CMD ["--redis", "redis://127.0.0.1:6379"]
