//! One integration binary for the whole suite: each module is one area of the product.

mod admin;
mod identity;
mod policy;
mod proxy;
