//! Placeholder: the RFC 3550 reference tests land with the datapath work.
