#!/usr/bin/env bash
# Regenerates the grpc-gateway anchor's Go code (echo.pb.go, echo_grpc.pb.go,
# echo.pb.gw.go) from echo.proto and echo.yaml with pinned generator
# versions. Needs protoc (Debian: protobuf-compiler); the Go plugins are
# built from the module proxy at the versions below (GOBIN: $GWBIN, default
# bin/protogen at the module root, as scripts/proto.sh uses).
set -euo pipefail
cd "$(dirname "$0")"
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.0
PROTOC_GEN_GRPC_GATEWAY=v2.33.0
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
bin="${GWBIN:-$(cd ../../.. && pwd)/bin/protogen}"
mkdir -p "$bin"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO}"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC}"
GOBIN="$bin" go install "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@${PROTOC_GEN_GRPC_GATEWAY}"
PATH="$bin:$PATH" protoc -I . \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out=. --grpc-gateway_opt=paths=source_relative \
  --grpc-gateway_opt=grpc_api_configuration=echo.yaml \
  echo.proto
echo "generated scripts/bench/gwecho (protoc $(protoc --version | cut -d' ' -f2), protoc-gen-go ${PROTOC_GEN_GO}, protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC}, protoc-gen-grpc-gateway ${PROTOC_GEN_GRPC_GATEWAY})"
