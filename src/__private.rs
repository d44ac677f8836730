//! What macro output names. Not a public API: it changes without notice.

pub use dogpile_core;
