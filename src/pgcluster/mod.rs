//! Local PostgreSQL clusters for the demo and tests (being written).
