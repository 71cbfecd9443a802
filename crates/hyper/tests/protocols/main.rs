//! End-to-end tests of the protocols servers speak, over real loopback sockets:
//! `h2c://` and `https://` servers, HTTP/2 clients, trailers, and gRPC with tonic.

mod common;
mod grpc;
mod h2;
mod https;
#[path = "../support/pki.rs"]
mod pki;
