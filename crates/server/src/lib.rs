//! Riffle's server: configuration, the HTTP faces, and the listener.

pub mod config;
pub mod conn;
pub mod fanout;
pub mod http;
pub mod resident;
pub mod serve;
pub mod subscriptions;
