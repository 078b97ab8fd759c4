//! Per-source contributions and aggregated outputs of stick tables.
