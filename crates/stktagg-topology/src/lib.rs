//! Resolves a configuration into the plan the daemon runs.
