//! The validation pipeline.
