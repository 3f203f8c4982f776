"""Generated protobuf/gRPC code; do not edit (regenerate with python -m federation.codegen)."""
