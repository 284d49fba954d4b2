//! Tests of the privacy boundary.
use super::*;
