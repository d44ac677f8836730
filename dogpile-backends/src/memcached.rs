//! `dogpile.cache.memcached` (not yet written).

use std::sync::Arc;

use dogpile_core::{Arguments, Backend, Error, Result};

/// Makes a `dogpile.cache.memcached` backend from its arguments.
pub fn make(_args: &Arguments) -> Result<Arc<dyn Backend>> {
    Err(Error::config(
        "dogpile.cache.memcached",
        "not yet available in this build",
    ))
}
