//! `dogpile.cache.null`: stores nothing, so every read is a miss and every creator runs.
//!
//! For turning caching off by configuration, and for tests.

use dogpile_core::{Arguments, Backend, CachedValue, PayloadKind, Result};

/// A backend that stores nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullBackend;

impl NullBackend {
    /// Makes one from configuration arguments (it takes none).
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        args.expect_only("dogpile.cache.null", &[])?;
        Ok(NullBackend)
    }
}

impl Backend for NullBackend {
    fn name(&self) -> &str {
        "dogpile.cache.null"
    }

    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Object
    }

    fn never_blocks(&self) -> bool {
        true
    }

    fn get(&self, _key: &str) -> Result<Option<CachedValue>> {
        Ok(None)
    }

    fn set(&self, _key: &str, _value: CachedValue) -> Result<()> {
        Ok(())
    }

    fn delete(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        Ok(vec![None; keys.len()])
    }
}
