//! engine model (in progress)
