//! The `chinwag` program as a library: the chat server, the echo server and the
//! client tools, each runnable on any [`chinwag_driver::Runtime`]. The binary
//! (`src/main.rs`) parses the command line; the integration tests use these
//! directly.

#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod chat;
pub mod client;
pub mod cluster;
pub mod echo;
pub mod ops;
pub mod runtime;
