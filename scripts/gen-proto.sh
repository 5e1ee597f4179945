#!/usr/bin/env bash
# Regenerate the Python modules of the SDK protocol from proto/trackmesh/sdk/*.proto.
#
# Needs the dev-only tools grpcio-tools (bundles protoc) and mypy-protobuf (protoc-gen-mypy, typed .pyi stubs):
#   .venv/bin/pip install grpcio-tools mypy-protobuf
# Writes src/trackmesh/transports/sdk/protocol/*_pb2.py and *_pb2.pyi (committed, generated code).
# The generated imports are rewritten to relative ones so the modules live inside the package.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
out="$root/src/trackmesh/transports/sdk/protocol"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python" -m grpc_tools.protoc --version
"$python" -m grpc_tools.protoc \
    -I "$root/proto" \
    --python_out="$tmp" \
    --plugin=protoc-gen-mypy="$(dirname "$python")/protoc-gen-mypy" \
    --mypy_out="$tmp" \
    "$root"/proto/trackmesh/sdk/*.proto

rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi
for f in "$tmp"/trackmesh/sdk/*_pb2.py "$tmp"/trackmesh/sdk/*_pb2.pyi; do
    # `from trackmesh.sdk import shared_pb2 as ...` -> `from . import shared_pb2 as ...`
    # and the module name given to the builder follows the package's real location.
    sed -E -e 's/^from trackmesh\.sdk import /from . import /' \
        -e "s/'trackmesh\.sdk\.([a-z_]+_pb2)'/'trackmesh.transports.sdk.protocol.\1'/" \
        "$f" > "$out/$(basename "$f")"
done
echo "generated: $(cd "$out" && ls *_pb2.py *_pb2.pyi | tr '\n' ' ')"
