//! Endpoint stage: one file per endpoint, each reading as the stages it calls.

pub mod health;
pub mod openapi;
pub mod products;
pub mod webhook;
