//! frontend (being written).
