# One image for every node; the command line (or SUPNET_DATA_DIR) picks the data directory and so the role.
#
# Builds with no network: Python packages come only from the wheelhouse (`make wheelhouse`, the locked set in
# constraints.txt), the base image is a build argument:
#   docker build --build-arg BASE_IMAGE=python:3.11-slim .        where a registry is reachable (the default)
#   make base-image && docker build --build-arg BASE_IMAGE=supnet-base:bookworm .   intranet: Debian from local apt
# What goes into the build context is whitelisted in .dockerignore: no keys, databases or node data, ever.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY wheels/ /wheels/
COPY constraints.txt pyproject.toml README.md ./
COPY federation ./federation
COPY node ./node
RUN python3 -m venv /opt/supnet \
    && /opt/supnet/bin/pip install --quiet --no-cache-dir --no-index --find-links /wheels \
        --constraint constraints.txt . \
    && /opt/supnet/bin/pip uninstall --quiet --yes pip setuptools \
    && /opt/supnet/bin/supnet --help >/dev/null

FROM ${BASE_IMAGE}
# A fixed uid/gid, so volumes keep their owner across rebuilds (and `docker run --user` can name it).
RUN echo 'supnet:x:10001:10001:supnet node:/var/lib/supnet:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'supnet:x:10001:' >>/etc/group \
    && mkdir -p /var/lib/supnet && chown 10001:10001 /var/lib/supnet && chmod 0700 /var/lib/supnet
COPY --from=build /opt/supnet /opt/supnet
COPY config/docker/healthcheck.py /opt/supnet/healthcheck.py
ENV PATH=/opt/supnet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    SUPNET_DATA_DIR=/var/lib/supnet \
    SUPNET_LOG_LEVEL=INFO
USER 10001:10001
WORKDIR /var/lib/supnet
# gRPC (federation.listen) and the enrolment listener (federation.enrol_listen), as docs/deploy.md fixes them.
EXPOSE 7100 7101
# gRPC health over mutual TLS with the node's own certificate (config/docker/healthcheck.py).
HEALTHCHECK --interval=5s --timeout=20s --start-period=60s --retries=3 \
    CMD ["/opt/supnet/bin/python", "/opt/supnet/healthcheck.py"]
ENTRYPOINT ["supnet"]
CMD ["serve"]
