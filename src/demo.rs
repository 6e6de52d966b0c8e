//! `sluice demo` (being written).
