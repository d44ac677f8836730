//! The attributes of the dogpile caching toolkit (being written).
use proc_macro::TokenStream;

/// Memoizes a function in a cache region.
#[proc_macro_attribute]
pub fn cache_on_arguments(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Memoizes a batch function in a cache region.
#[proc_macro_attribute]
pub fn cache_multi_on_arguments(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
