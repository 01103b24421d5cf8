#!/usr/bin/env bash
# Generates onnx.pb.go from the onnx.proto Debian's libonnx-dev ships (ONNX 1.12), with
# protoc (protobuf-compiler) and protoc-gen-go v1.36.12 (google.golang.org/protobuf):
#
#   apt-get install protobuf-compiler libonnx-dev
#   GOBIN=/tmp/gobin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   PATH=/tmp/gobin:$PATH internal/onnxpb/gen.sh
#
# The generated file is committed; builds and tests need none of these tools.
set -euo pipefail
cd "$(dirname "$0")"
proto=${ONNX_PROTO:-/usr/include/onnx/onnx.proto}
dir=$(mktemp -d)
cp "$proto" "$dir/onnx.proto"
protoc --proto_path="$dir" --go_out=. --go_opt=paths=source_relative \
  --go_opt=Monnx.proto=github.com/lathe-ml/lathe/internal/onnxpb "$dir/onnx.proto"
rm -rf "$dir"
