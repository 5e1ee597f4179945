"""Generated protobuf modules of the connector's webhook body (proto/trackmesh/connector; scripts/gen-proto.sh)."""
