//! mcpgw: a gateway for the Model Context Protocol.
//!
//! Modules, in the order a request meets them:
//! - [`policy`]: the Wasm policy chain that decides every `tools/call` and `tools/list` visibility,
//!   with hot reload of the policy directory.
#![warn(missing_docs)]

pub mod policy;
