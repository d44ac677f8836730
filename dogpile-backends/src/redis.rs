//! `dogpile.cache.redis` and `dogpile.cache.redis_cluster` (not yet written).

use std::sync::Arc;

use dogpile_core::{Arguments, Backend, Error, Result};

/// Makes a `dogpile.cache.redis` backend from its arguments.
pub fn make_redis(_args: &Arguments) -> Result<Arc<dyn Backend>> {
    Err(Error::config(
        "dogpile.cache.redis",
        "not yet available in this build",
    ))
}

/// Makes a `dogpile.cache.redis_cluster` backend from its arguments.
pub fn make_redis_cluster(_args: &Arguments) -> Result<Arc<dyn Backend>> {
    Err(Error::config(
        "dogpile.cache.redis_cluster",
        "not yet available in this build",
    ))
}
