#!/usr/bin/env bash
# Regenerate the Python modules of our protobuf definitions:
# - proto/trackmesh/sdk/*.proto       -> src/trackmesh/transports/sdk/protocol/ (the SDK protocol)
# - proto/trackmesh/connector/*.proto -> src/trackmesh/connector/protocol/ (--hook-body protobuf)
# - tests/connector/atm0s_shape/*.proto -> same folder (the test's atm0s-shaped decoder)
#
# Needs the dev-only tools grpcio-tools (bundles protoc) and mypy-protobuf (protoc-gen-mypy, typed .pyi stubs):
#   .venv/bin/pip install grpcio-tools mypy-protobuf
# Writes *_pb2.py and *_pb2.pyi (committed, generated code).
# The generated imports are rewritten to relative ones so the modules live inside their package.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
"$python" -m grpc_tools.protoc --version

# gen INCLUDE_DIR REL_DIR OUT_DIR MODULE_PACKAGE: compile INCLUDE_DIR/REL_DIR/*.proto into OUT_DIR, whose
# modules are importable as MODULE_PACKAGE.<name>_pb2.
gen() {
    local include="$1" rel="$2" out="$3" package="$4"
    local tmp dotted
    tmp="$(mktemp -d)"
    dotted="${rel//\//\\.}"
    "$python" -m grpc_tools.protoc \
        -I "$include" \
        --python_out="$tmp" \
        --plugin=protoc-gen-mypy="$(dirname "$python")/protoc-gen-mypy" \
        --mypy_out="$tmp" \
        "$include/$rel"/*.proto
    rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi
    for f in "$tmp/$rel"/*_pb2.py "$tmp/$rel"/*_pb2.pyi; do
        # `from trackmesh.sdk import shared_pb2 as ...` -> `from . import shared_pb2 as ...`
        # and the module name given to the builder follows the package's real location.
        sed -E -e "s/^from ${dotted//\\./\\.} import /from . import /" \
            -e "s/'${dotted}\.([a-z0-9_]+_pb2)'/'${package}.\1'/" \
            "$f" > "$out/$(basename "$f")"
    done
    rm -rf "$tmp"
    echo "generated in $out: $(cd "$out" && ls *_pb2.py *_pb2.pyi | tr '\n' ' ')"
}

gen "$root/proto" trackmesh/sdk "$root/src/trackmesh/transports/sdk/protocol" trackmesh.transports.sdk.protocol
gen "$root/proto" trackmesh/connector "$root/src/trackmesh/connector/protocol" trackmesh.connector.protocol
gen "$root/tests/connector" atm0s_shape "$root/tests/connector/atm0s_shape" tests.connector.atm0s_shape
