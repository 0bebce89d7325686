//! Outbound calls (placeholder while the upstream module is written).
