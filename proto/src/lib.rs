//! Generated gRPC/protobuf code of the `collector.v1` API (filled in by the streaming work).
