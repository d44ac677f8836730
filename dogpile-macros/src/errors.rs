//! One way to collect errors: every check of an attribute runs, and the user sees all that is
//! wrong at once rather than one error per compile.

use std::fmt::Display;

use proc_macro2::{Span, TokenStream};

/// The errors found so far while reading one attribute or block.
#[derive(Default)]
pub(crate) struct Errors {
    all: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn new() -> Self {
        Errors::default()
    }

    /// Records `error` beside the others.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.all {
            Some(all) => all.combine(error),
            None => self.all = Some(error),
        }
    }

    /// Records an error with `message` at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// The value of `result`, or `None` with its error recorded.
    pub(crate) fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// `Ok(())` when nothing was recorded, else every error as one.
    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.all {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every error as `compile_error!` invocations (empty when there are none), for an expansion
    /// that goes on after its errors.
    pub(crate) fn into_compile_errors(self) -> TokenStream {
        self.all.map(|e| e.to_compile_error()).unwrap_or_default()
    }
}
