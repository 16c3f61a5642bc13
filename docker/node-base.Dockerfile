# A stand-in for node:20-bookworm-slim where Docker Hub cannot be reached: a Debian 12 rootfs made
# by debootstrap (imported as ROOTFS_IMAGE) plus the official Node 20 binary and npm 10 from the
# npm registry, laid out as the official image does (/usr/local/bin, /usr/local/lib/node_modules).
# Built by `npm run image:test`; see scripts/image-test.ts.
ARG ROOTFS_IMAGE=gim-serve-base/debian:bookworm
FROM ${ROOTFS_IMAGE}
SHELL ["/bin/sh", "-eu", "-c"]
COPY node/ /usr/local/
COPY npm/ /usr/local/lib/node_modules/npm/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
CMD ["node"]
