//! The stktagg configuration language (see `docs/configuration.md`).
