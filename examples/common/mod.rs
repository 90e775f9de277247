//! What the examples share: their command lines ([`cli`], on `lexopt`),
//! byte sizes ([`size`]), and what `media_server`'s media are made of: the
//! byte pattern ([`pattern`]), MPEG-TS ([`ts`]) and H.264 ([`h264`]). Pulled in with `#[path = "../common/mod.rs"] mod
//! common;` (or `"common/mod.rs"` from a single-file example); cargo does not
//! take this directory for an example, as it has no `main.rs`.

// Each example uses its own part of this.
#![allow(dead_code)]

pub mod cli;
pub mod h264;
pub mod pattern;
pub mod size;
pub mod ts;
