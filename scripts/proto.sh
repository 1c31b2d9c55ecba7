#!/usr/bin/env bash
# Regenerates proto/pluginpb from proto/*.proto with pinned generator
# versions. Needs protoc (Debian: protobuf-compiler); the Go plugins are
# built from the module proxy at the versions below.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.0
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
bin="$(pwd)/bin/protogen"
mkdir -p "$bin"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO}"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC}"
PATH="$bin:$PATH" protoc -I proto \
  --go_out=proto/pluginpb --go_opt=paths=source_relative \
  --go-grpc_out=proto/pluginpb --go-grpc_opt=paths=source_relative \
  proto/plugin.proto
echo "generated proto/pluginpb (protoc $(protoc --version | cut -d' ' -f2), protoc-gen-go ${PROTOC_GEN_GO}, protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC})"
