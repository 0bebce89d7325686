//! Stand-in servers (being written).
