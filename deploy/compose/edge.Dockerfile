# The edge on Node (edge/node.ts) for deploy/compose/compose.yaml. CPU only: the repo's
# .npmrc skips onnxruntime-node's GPU download. Build context: the repository root
# (its ignore file is edge.Dockerfile.dockerignore, beside this file).
FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8787
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY tsconfig.json ./
COPY core ./core
COPY models ./models
COPY edge ./edge
USER node
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+process.env.PORT+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "--import", "tsx", "edge/node.ts"]
