//! Framer bench (being written).
fn main() {}
