//! Bad input gets a clear, typed error and changes nothing.
