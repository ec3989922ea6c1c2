//! One integration binary for the whole suite: each module is one area of the product.

mod admin;
mod audit;
mod identity;
mod policy;
mod proxy;
mod python_sdk;
