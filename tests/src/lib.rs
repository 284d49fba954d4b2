//! Shared helpers of the privileged integration tests (network namespaces, veth pairs).
