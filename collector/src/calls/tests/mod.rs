//! Tests of call tracking: the state machine transition by transition, the tracker on
//! crafted SIP, the media binder against the kernel's lookup order, and replay of the shared
//! corpus against its tshark oracles.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod corpus;
mod dialog;
mod media;
mod sipgen;
mod tracker;
