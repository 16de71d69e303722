# bwq, CPU image (docs/CI.md § Docker). The build installs bwq as CI does and runs the test suite; a failing
# test fails the build. The runtime stage holds what `bwq` needs and nothing else.
#   docker build -t bwq .
#   docker run --rm -v "$PWD/out:/out" bwq quantize --method bwla -o /out/sotu-w1a6
FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/bwq
ENV CI=true
# onnxruntime-node's install script would download its CUDA provider: bwq runs onnxruntime on the CPU
ENV ONNXRUNTIME_NODE_INSTALL=skip
# node-gyp builds against the headers of the image's Node.js instead of downloading them
ENV npm_config_nodedir=/usr/local
ENV BWQ_NO_CUDA=1
# dependencies and the native build first: this layer is reused while package-lock.json, binding.gyp,
# native/ and src/ are unchanged
COPY package.json package-lock.json binding.gyp tsconfig.json ./
COPY native ./native
COPY src ./src
COPY bin ./bin
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm test
# the native objects' intermediate files and the other platforms' onnxruntime binaries are not needed to run
RUN npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && arch="$(node -p process.arch)" \
 && cd node_modules/onnxruntime-node/bin/napi-v6 \
 && find . -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} + \
 && find linux -mindepth 1 -maxdepth 1 ! -name "$arch" -exec rm -rf {} +

FROM node:20-bookworm-slim
WORKDIR /opt/bwq
ENV CI=true
COPY --from=build /opt/bwq/package.json ./
COPY --from=build /opt/bwq/bin ./bin
COPY --from=build /opt/bwq/dist ./dist
COPY --from=build /opt/bwq/build/Release/bwq.node ./build/Release/
COPY --from=build /opt/bwq/node_modules ./node_modules
COPY --from=build /opt/bwq/models ./models
COPY --from=build /opt/bwq/calibration ./calibration
COPY --from=build /opt/bwq/data ./data
RUN ln -s /opt/bwq/bin/bwq.js /usr/local/bin/bwq
WORKDIR /work
ENTRYPOINT ["bwq"]
CMD ["--help"]
