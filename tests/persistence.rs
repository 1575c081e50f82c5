//! What is committed survives reopening, read-write and read-only.
