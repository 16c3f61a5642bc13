# gim-serve images. Two targets:
#   gpu (the default, production on NVIDIA nodes): CUDA 11.8 runtime + cuDNN 8, tfjs-node-gpu
#   cpu: the same service on tfjs-node (or wasm with --build-arg CPU_BACKEND=wasm)
#
#   docker build -t gim-serve:gpu .                      # where Docker Hub (or a mirror) is reachable
#   docker build --target cpu -t gim-serve:cpu .
#   npm run image:test                                   # builds and runs the cpu target here
#
# Every base image is a build argument (registry mirrors, air-gapped builds: npm run image:test
# builds its own Debian + Node base when Docker Hub cannot be reached). Pins are tag + digest: the
# digest decides, the tag says what it is. Bump both together
# (`docker buildx imagetools inspect <tag> --format '{{.Manifest.Digest}}'`).
#
# NODE_IMAGE: Node 20 on Debian 12, for the build stages and the cpu runtime.
ARG NODE_IMAGE=node:20-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0
# CUDA_IMAGE: tfjs-node-gpu 4.22 bundles libtensorflow 2.9.1, built for CUDA 11.2 + cuDNN 8.1; it
# loads libcudart.so.11.0, libcublas.so.11 and libcudnn.so.8. 11.2.x tags were deleted by NVIDIA
# (EOL policy); 11.8.0 provides the same sonames (CUDA 11 minor-version compatibility, driver
# >= 450.80.02), cuDNN 8.x >= 8.1, Ubuntu 22.04's glibc suits Node 20. For a newer libtensorflow
# (LIBTENSORFLOW_GPU_URL below, e.g. TF 2.15+ for Hopper) use a CUDA 12 image that matches it.
ARG CUDA_IMAGE=nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04@sha256:85fb7ac694079fff1061a0140fd5b5a641997880e12112d92589c3bbb1e8b7ca

# ---------------------------------------------------------------------------------------------
# node: only used to copy the Node binary into the CUDA image.
FROM ${NODE_IMAGE} AS node

# ---------------------------------------------------------------------------------------------
# base-build: compilers for the native bindings, npm with the extra CA certificates.
FROM ${NODE_IMAGE} AS base-build
SHELL ["/bin/sh", "-eu", "-c"]
# PEM text of extra CA certificates, for a TLS-inspecting proxy between the build and the npm
# registry (--build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)").
ARG EXTRA_CA_CERTS=""
RUN printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/gim-extra-ca.pem
ENV NODE_EXTRA_CA_CERTS=/usr/local/share/gim-extra-ca.pem
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ unzip binutils ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./

# ---------------------------------------------------------------------------------------------
# prod-deps: the runtime node_modules, without dev dependencies. Install scripts are off: the only
# ones that matter are tfjs-node's, whose binding the native-* stages build and check.
FROM base-build AS prod-deps
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/@tensorflow/tfjs-node/deps node_modules/@tensorflow/tfjs-node-gpu/deps \
 && npm cache clean --force

# ---------------------------------------------------------------------------------------------
# build: everything (dev dependencies included), compiled to dist/.
FROM base-build AS build
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json nest-cli.json ./
COPY src ./src
COPY scripts ./scripts
RUN npm run build

# ---------------------------------------------------------------------------------------------
# native-cpu: the tfjs-node binding and its libtensorflow, in /out/tfjs-node (empty for wasm).
#   default: tfjs-node's own install (downloads libtensorflow 2.9.1 and its prebuilt binding)
#   docker-deps/libtensorflow/ holding a TensorFlow wheel or a libtensorflow tarball, or itself a
#   directory with include/ + lib/ (see npm run native:install): the binding is compiled against
#   it, offline.
FROM build AS native-cpu
ARG CPU_BACKEND=tensorflow
COPY docker-deps/ /tmp/docker-deps/
RUN mkdir -p /out \
 && if [ "$CPU_BACKEND" = wasm ]; then echo "cpu image on wasm: no native backend"; exit 0; fi \
 && libtf=/tmp/docker-deps/libtensorflow \
 && if [ ! -d "$libtf/lib" ]; then libtf=$(ls "$libtf"/*.whl "$libtf"/*.tar.gz 2>/dev/null | head -n 1 || true); fi \
 && if [ -n "$libtf" ]; then \
      npm run native:install -- --package tfjs-node --from "$libtf" --cache /tmp/native && rm -rf /tmp/native; \
    else \
      (cd node_modules/@tensorflow/tfjs-node && npm run install); \
    fi \
 && test -f node_modules/@tensorflow/tfjs-node/lib/napi-v8/tfjs_binding.node \
   || { echo "FATAL: the tfjs-node binding was not built: the image would silently run on wasm" >&2; exit 1; } \
 && npm run native:install -- --package tfjs-node --check \
 && mkdir -p /out/tfjs-node \
 && cp -a node_modules/@tensorflow/tfjs-node/lib node_modules/@tensorflow/tfjs-node/deps /out/tfjs-node/

# ---------------------------------------------------------------------------------------------
# native-gpu: the tfjs-node-gpu binding and libtensorflow (GPU), in /out/tfjs-node-gpu.
#   default: tfjs-node-gpu's own install: libtensorflow 2.9.1 (CUDA 11.2 / cuDNN 8.1 build).
#   LIBTENSORFLOW_GPU_URL: a libtensorflow GPU tarball of a newer TensorFlow release (sm_90 code
#   for Hopper), e.g.
#   https://storage.googleapis.com/tensorflow/versions/2.18.0/libtensorflow-gpu-linux-x86_64.tar.gz
#   the binding is compiled against it (then use the CUDA 12 base that release was built for).
FROM build AS native-gpu
ARG LIBTENSORFLOW_GPU_URL=""
RUN mkdir -p /out/tfjs-node-gpu \
 && if [ -n "$LIBTENSORFLOW_GPU_URL" ]; then \
      node -e "fetch(process.argv[1]).then(async r => { if (!r.ok) throw new Error(r.status + ' ' + r.url); require('fs').writeFileSync('/tmp/libtensorflow-gpu.tar.gz', Buffer.from(await r.arrayBuffer())); })" "$LIBTENSORFLOW_GPU_URL" \
      && npm run native:install -- --package tfjs-node-gpu --from /tmp/libtensorflow-gpu.tar.gz --cache /tmp/native; \
    else \
      (cd node_modules/@tensorflow/tfjs-node-gpu && npm run install); \
    fi \
 && test -f node_modules/@tensorflow/tfjs-node-gpu/lib/napi-v8/tfjs_binding.node \
   || { echo "FATAL: the tfjs-node-gpu binding was not built: the image would silently run on wasm" >&2; exit 1; } \
 && cp -a node_modules/@tensorflow/tfjs-node-gpu/lib node_modules/@tensorflow/tfjs-node-gpu/deps /out/tfjs-node-gpu/

# ---------------------------------------------------------------------------------------------
# cpu: the service on tfjs-node, for nodes without GPUs (and for this repository's CI).
FROM ${NODE_IMAGE} AS cpu
SHELL ["/bin/sh", "-eu", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 gim \
 && useradd --uid 10001 --gid gim --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gim
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
RUN rm -rf node_modules/@tensorflow/tfjs-node-gpu
COPY --from=native-cpu /out/ ./node_modules/@tensorflow/
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY models ./models
COPY docker/entrypoint.sh ./docker/entrypoint.sh
ENV NODE_ENV=production \
    PORT=8080 \
    MODELS_DIR=/app/models \
    TF_CPP_MIN_LOG_LEVEL=1
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# tini (PID 1) forwards signals and reaps the CLI children of admin training runs; the entrypoint
# execs Node. Arguments: nothing or `serve` runs the service, `gim <args>` the CLI.
ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------
# gpu (default): the service on tfjs-node-gpu, on the CUDA runtime.
FROM ${CUDA_IMAGE} AS gpu
SHELL ["/bin/sh", "-eu", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 gim \
 && useradd --uid 10001 --gid gim --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gim \
 && mkdir -p /cache/cuda \
 && chown 10001:10001 /cache/cuda
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
RUN rm -rf node_modules/@tensorflow/tfjs-node
COPY --from=native-gpu /out/ ./node_modules/@tensorflow/
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY models ./models
COPY docker/entrypoint.sh ./docker/entrypoint.sh
# TF_FORCE_GPU_ALLOW_GROWTH: TensorFlow would otherwise take all GPU memory at start (no room for
# a training Job or a time-sliced neighbour). CUDA_CACHE_PATH: the PTX JIT cache of the first start
# on a GPU newer than the binary's SASS (minutes on Hopper); mount a volume there to keep it.
ENV NODE_ENV=production \
    PORT=8080 \
    MODELS_DIR=/app/models \
    TF_CPP_MIN_LOG_LEVEL=1 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    CUDA_CACHE_PATH=/cache/cuda \
    CUDA_CACHE_MAXSIZE=4294967296 \
    GIM_BACKEND=tensorflow-gpu
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["serve"]
