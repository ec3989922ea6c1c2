//! One integration binary for the whole suite: each module is one area of the product.

mod admin;
mod audit;
mod console;
mod fence;
mod flows;
mod identity;
mod limits;
mod oidc;
mod policy;
mod proxy;
mod python_sdk;
mod roles;
mod scale;
mod scim;
mod stdio;
mod stdio_fixture;
mod tls;
