//! Riffle's server: configuration, the HTTP faces, and the listener.

pub mod config;
pub mod http;
pub mod serve;
