//! Error types.
//!
//! Every error says what went wrong and where: configuration errors name the configuration key and
//! what was expected, backend errors name the backend (and, for servers, the address).

use std::fmt;

/// A boxed error from a backend's client library, kept as the source of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The errors of the dogpile toolkit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The region was used before `configure` (or `configure_from_config`) was called.
    #[error("region {region} is not configured: call configure() or configure_from_config() before using it")]
    NotConfigured {
        /// The region's name, or `<unnamed>`.
        region: String,
    },

    /// `configure` was called on a region that already has a backend.
    #[error("region {region} already has a backend ({backend}): pass replace_existing_backend(true) to replace it")]
    AlreadyConfigured {
        /// The region's name, or `<unnamed>`.
        region: String,
        /// The name of the backend already configured.
        backend: String,
    },

    /// No backend of that name is registered.
    #[error("{}unknown backend {name:?}{}; known backends: {}", .key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default(), .hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default(), .known.join(", "))]
    UnknownBackend {
        /// The configuration key that named it, when it came from a configuration map.
        key: Option<String>,
        /// The name that was asked for.
        name: String,
        /// An explanation, for example the cargo feature that enables the backend.
        hint: Option<String>,
        /// Every backend name this build knows.
        known: Vec<String>,
    },

    /// A configuration key or backend argument is missing, unknown or of the wrong type.
    #[error("{}: {message}", if .key.is_empty() { "(an empty key)" } else { .key.as_str() })]
    Config {
        /// The full key: `cache.local.arguments.max_size`, or `arguments.max_size` in code.
        key: String,
        /// What was expected and what was found.
        message: String,
    },

    /// The backend failed: a connection, a protocol or a storage error.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend, with the server address or file path where there is one.
        backend: String,
        /// What failed.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },

    /// Soft invalidation needs an expiration time to turn "invalidated" into "expired".
    #[error("region {region} was soft-invalidated, but {key:?} has no expiration time: soft invalidation needs one (use a hard invalidation, or set expiration_time)")]
    SoftInvalidationWithoutExpiration {
        /// The region's name, or `<unnamed>`.
        region: String,
        /// The key being read or created.
        key: String,
    },

    /// A value could not be encoded for a byte backend.
    #[error("cannot encode the value for {key:?}: {message}")]
    Encode {
        /// The key being written.
        key: String,
        /// What the encoder said.
        message: String,
    },

    /// A caller waited for another caller's creation of a value longer than the region's
    /// `lock_blocking_timeout` (see
    /// [`RegionConfig::lock_blocking_timeout`](crate::RegionConfig::lock_blocking_timeout)); the
    /// other creation may still be running.
    #[error("region {region}: gave up waiting for the creation of {key:?} by another caller after {waited:?} (lock_blocking_timeout)")]
    LockTimeout {
        /// The region's name, or `<unnamed>`.
        region: String,
        /// The key waited for (before mangling).
        key: String,
        /// How long this caller waited.
        waited: std::time::Duration,
    },

    /// The `function_key_generator` or `function_multi_key_generator` produced something unusable.
    #[error("key generation failed: {0}")]
    Key(String),

    /// A creator ran longer than the region's `hard_timeout` (see
    /// [`RegionConfig::hard_timeout`](crate::RegionConfig::hard_timeout)) and there was no value
    /// to give; the creator goes on and stores its value when it finishes.
    #[error("region {region}: the creator of {key:?} ran past the hard timeout ({timeout:?}) and there is no value to give; it goes on in the background")]
    CreatorTimeout {
        /// The region's name, or `<unnamed>`.
        region: String,
        /// The key being created (before mangling).
        key: String,
        /// The hard timeout.
        timeout: std::time::Duration,
    },
}

impl Error {
    /// A backend error with a message and the client's error as its source.
    pub fn backend(
        backend: impl Into<String>,
        message: impl fmt::Display,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: message.to_string(),
            source: Some(source.into()),
        }
    }

    /// A backend error with a message only.
    pub fn backend_msg(backend: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: message.to_string(),
            source: None,
        }
    }

    /// A configuration error for `key`.
    pub fn config(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Config {
            key: key.into(),
            message: message.to_string(),
        }
    }

    /// Whether this error came from the storage (as opposed to configuration or usage).
    pub fn is_backend(&self) -> bool {
        matches!(self, Error::Backend { .. })
    }
}

/// The error of [`CacheRegion::try_get_or_create`](crate::CacheRegion::try_get_or_create): either
/// the creator's own error, or the cache's.
#[derive(Debug, thiserror::Error)]
pub enum CreateError<E> {
    /// The creator returned this error; nothing was stored.
    #[error("the creator failed: {0}")]
    Creator(E),
    /// The cache failed before a value could be created.
    #[error(transparent)]
    Cache(#[from] Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
