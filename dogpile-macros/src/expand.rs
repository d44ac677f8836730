//! Code generation: the decorated function, its companions, and the checks that give errors at
//! the right place.
//!
//! The body is kept three times: as `<fn>_uncached` (the original function, renamed), and as a
//! closure inside the decorated function and inside `<fn>_refresh`, so the generated code never
//! has to know whether it sits in an `impl` block. Everything else is a call into
//! `::dogpile::__private`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemFn, Pat, PatIdent, PathArguments, ReturnType,
    Signature, Type,
};

use crate::args::{parse_template, Args, Kind, RawArgs, TemplatePiece};
use crate::errors::Errors;

/// Expands one attribute; on error, the original item with the errors, so that the rest of the
/// crate still sees the function.
pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(f)) => f,
        Ok(other) => {
            let what = item_kind(&other);
            let err = syn::Error::new(
                Span::call_site(),
                format!(
                    "#[{}] applies to a function (`fn` or `async fn`, free or in an `impl` block), not to {what}",
                    kind.attr_name()
                ),
            );
            return with_item(err, item);
        }
        Err(_) => {
            let err = syn::Error::new(
                Span::call_site(),
                format!(
                    "#[{}] applies to a function with a body (`fn` or `async fn`, free or in an `impl` block)",
                    kind.attr_name()
                ),
            );
            return with_item(err, item);
        }
    };
    match generate(kind, attr, &func) {
        Ok(tokens) => tokens,
        Err(e) => with_item(e, item),
    }
}

/// The decorated function and its companions, or the first errors.
pub(crate) fn generate(kind: Kind, attr: TokenStream, func: &ItemFn) -> syn::Result<TokenStream> {
    let args = syn::parse2::<RawArgs>(attr).and_then(|raw| Args::from_raw(raw, kind))?;
    let f = Func::new(func, &args, kind)?;
    match kind {
        Kind::Single => f.expand_single(&args),
        Kind::Multi => f.expand_multi(&args),
    }
}

pub(crate) fn with_item(err: syn::Error, item: TokenStream) -> TokenStream {
    let err = err.to_compile_error();
    quote!(#err #item)
}

fn item_kind(item: &syn::Item) -> &'static str {
    match item {
        syn::Item::Struct(_) => "a struct",
        syn::Item::Enum(_) => "an enum",
        syn::Item::Impl(_) => "an `impl` block (put it on a function inside, and #[cache_impl] on the block of a trait's `impl`)",
        syn::Item::Trait(_) => "a trait",
        syn::Item::Mod(_) => "a module",
        syn::Item::Static(_) => "a static",
        syn::Item::Const(_) => "a constant",
        syn::Item::Type(_) => "a type alias",
        syn::Item::Use(_) => "a `use`",
        _ => "this item",
    }
}

/// Whether an attribute of a cached function (or of its `impl` block) also applies to the
/// companions: `cfg`, lint levels, `deprecated`.
pub(crate) fn carried_to_companions(attr: &Attribute) -> bool {
    [
        "cfg",
        "cfg_attr",
        "allow",
        "expect",
        "warn",
        "deny",
        "forbid",
        "deprecated",
    ]
    .iter()
    .any(|name| attr.path().is_ident(name))
}

/// One typed argument of the decorated function.
struct Param {
    /// The name it has in the generated functions.
    ident: Ident,
    /// The pattern as written, when it is more than a plain name (`mut x`, `(a, b)`).
    pattern: Option<Pat>,
    ty: Type,
    /// Left out of the key.
    ignored: bool,
}

/// The decorated function, taken apart.
struct Func<'a> {
    item: &'a ItemFn,
    params: Vec<Param>,
    /// The key arguments, in key order: indices into `params`.
    key_params: Vec<usize>,
    /// The `key = "…"` template, as pieces naming `key_params` positions.
    template: Option<Vec<TemplatePieceIdx>>,
    is_async: bool,
    /// The return type as written (`()` when there is none).
    ret: Type,
    /// What is cached: `T` of `Result<T, E>`, else the return type.
    cached: Type,
    is_result: bool,
}

enum TemplatePieceIdx {
    Lit(String),
    Arg(usize),
}

impl<'a> Func<'a> {
    fn new(item: &'a ItemFn, args: &Args, kind: Kind) -> syn::Result<Self> {
        let sig = &item.sig;
        if let Some(c) = &sig.constness {
            return Err(syn::Error::new(
                c.span(),
                "a `const fn` cannot be cached: its result is computed at compile time",
            ));
        }
        if let Some(v) = &sig.variadic {
            return Err(syn::Error::new(
                v.span(),
                "a variadic function cannot be cached",
            ));
        }
        let mut params = Vec::new();
        for (i, input) in sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(_) => {}
                FnArg::Typed(pt) => {
                    let (ident, pattern) = match &*pt.pat {
                        Pat::Ident(PatIdent {
                            ident,
                            by_ref: None,
                            mutability: None,
                            subpat: None,
                            ..
                        }) => (ident.clone(), None),
                        Pat::Ident(PatIdent {
                            ident,
                            by_ref: None,
                            subpat: None,
                            ..
                        }) => (ident.clone(), Some((*pt.pat).clone())),
                        other => (format_ident!("__dp_arg{}", i), Some(other.clone())),
                    };
                    params.push(Param {
                        ident,
                        pattern,
                        ty: (*pt.ty).clone(),
                        ignored: false,
                    });
                }
            }
        }

        let mut errors = Errors::new();

        for name in &args.ignore {
            if name == "self" {
                errors.push(syn::Error::new(
                    name.span(),
                    "`self` is never part of the key: there is no need to ignore it",
                ));
                continue;
            }
            match params.iter_mut().find(|p| p.ident == *name) {
                Some(p)
                    if p.pattern
                        .as_ref()
                        .is_some_and(|p| !matches!(p, Pat::Ident(_))) =>
                {
                    errors.push(syn::Error::new(
                        name.span(),
                        format!("no argument is named `{name}`"),
                    ))
                }
                Some(p) if p.ignored => errors.push(syn::Error::new(
                    name.span(),
                    format!("`{name}` is ignored twice"),
                )),
                Some(p) => p.ignored = true,
                None => errors.push(syn::Error::new(
                    name.span(),
                    format!("`{name}` in `ignore` is not an argument of `{}`", sig.ident),
                )),
            }
        }

        let mut key_params: Vec<usize> = Vec::new();
        let mut template = None;
        if let Some(lit) = &args.key {
            let pieces = parse_template(lit, "key")?;
            let mut out = Vec::new();
            for piece in pieces {
                match piece {
                    TemplatePiece::Lit(s) => out.push(TemplatePieceIdx::Lit(s)),
                    TemplatePiece::Arg(name) => {
                        if name == "self" {
                            errors.push(syn::Error::new(
                                lit.span(),
                                "`{self}` cannot be part of the key: name the arguments that identify the value",
                            ));
                            continue;
                        }
                        let found = params.iter().position(|p| {
                            p.ident == name && !p.ident.to_string().starts_with("__dp_arg")
                        });
                        match found {
                            Some(i) if params[i].ignored => errors.push(syn::Error::new(
                                lit.span(),
                                format!("`{{{name}}}` is in `key`, but `{name}` is in `ignore`"),
                            )),
                            Some(i) => {
                                let pos = match key_params.iter().position(|&k| k == i) {
                                    Some(pos) => pos,
                                    None => {
                                        key_params.push(i);
                                        key_params.len() - 1
                                    }
                                };
                                out.push(TemplatePieceIdx::Arg(pos));
                            }
                            None => {
                                let known: Vec<String> = params
                                    .iter()
                                    .filter(|p| !p.ident.to_string().starts_with("__dp_arg"))
                                    .map(|p| format!("`{}`", p.ident))
                                    .collect();
                                errors.push(syn::Error::new(
                                    lit.span(),
                                    format!(
                                        "`{{{name}}}` in `key` is not an argument of `{}`; its arguments are: {}",
                                        sig.ident,
                                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                                    ),
                                ))
                            }
                        }
                    }
                }
            }
            for (i, p) in params.iter().enumerate() {
                if !p.ignored && !key_params.contains(&i) {
                    let shown = match &p.pattern {
                        Some(pat) if !matches!(pat, Pat::Ident(_)) => {
                            pat.to_token_stream().to_string()
                        }
                        _ => p.ident.to_string(),
                    };
                    errors.push(syn::Error::new(
                        p.ty.span().join(p.ident.span()).unwrap_or(p.ident.span()),
                        format!(
                            "argument `{shown}` is not part of the key: add `{{{shown}}}` to `key = \"…\"`, or leave it out with `ignore = [{shown}]`"
                        ),
                    ));
                }
            }
            template = Some(out);
        } else {
            key_params = (0..params.len()).filter(|&i| !params[i].ignored).collect();
        }

        // Behind a `dyn` the type is gone: `&5u8` and `&"5"` both write the key text `5`, and
        // unlike an `impl Trait` argument's type, a `dyn`'s cannot be written into the key. So
        // two calls would share one key; a key argument whose type holds `dyn` is refused.
        for &i in &key_params {
            let p = &params[i];
            if holds_word(p.ty.to_token_stream(), "dyn") {
                errors.push(dyn_key_argument(p, kind, args.key.is_some()));
            }
        }

        let ret = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        if let Type::ImplTrait(it) = &ret {
            errors.push(syn::Error::new(
                it.span(),
                "an `impl Trait` return type cannot be cached: name the type (it must be `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`)",
            ));
        }
        let (cached, is_result) = match result_ok_type(&ret) {
            Some(t) if kind == Kind::Single => (t.clone(), true),
            _ => (ret.clone(), false),
        };

        errors.finish()?;
        Ok(Func {
            item,
            params,
            key_params,
            template,
            is_async: sig.asyncness.is_some(),
            ret,
            cached,
            is_result,
        })
    }

    fn name(&self) -> &Ident {
        &self.item.sig.ident
    }

    fn companion(&self, suffix: &str) -> Ident {
        format_ident!("{}_{}", self.name(), suffix)
    }

    /// Attributes the companions share with the function: `cfg` and lint levels.
    fn shared_attrs(&self) -> Vec<&Attribute> {
        self.item
            .attrs
            .iter()
            .filter(|a| carried_to_companions(a))
            .collect()
    }

    /// The signature of a generated function: the original with plain argument names.
    fn plain_sig(&self) -> Signature {
        let mut sig = self.item.sig.clone();
        let mut params = self.params.iter();
        for input in sig.inputs.iter_mut() {
            if let FnArg::Typed(pt) = input {
                if let Some(p) = params.next() {
                    *pt.pat = Pat::Ident(PatIdent {
                        attrs: Vec::new(),
                        by_ref: None,
                        mutability: None,
                        ident: p.ident.clone(),
                        subpat: None,
                    });
                }
            }
        }
        sig
    }

    /// A companion's signature: `name`, `&self` if the function has a receiver, `first` (the
    /// value of `_set`), the key arguments (or all of them), and `output`.
    fn companion_sig(
        &self,
        name: Ident,
        first: Option<TokenStream>,
        all_params: bool,
        output: ReturnType,
    ) -> Signature {
        let mut sig = self.plain_sig();
        sig.ident = name;
        sig.output = output;
        let receiver = sig.inputs.iter().find_map(|i| match i {
            FnArg::Receiver(r) => Some(r.clone()),
            _ => None,
        });
        let mut inputs: syn::punctuated::Punctuated<FnArg, syn::Token![,]> = Default::default();
        if let Some(r) = receiver {
            if all_params {
                inputs.push(FnArg::Receiver(r));
            } else {
                inputs.push(syn::parse_quote!(&self));
            }
        }
        if let Some(first) = first {
            inputs.push(syn::parse_quote!(#first));
        }
        for (i, p) in self.params.iter().enumerate() {
            if all_params || self.key_params.contains(&i) {
                let (ident, ty) = (&p.ident, &p.ty);
                inputs.push(syn::parse_quote!(#ident: #ty));
            }
        }
        sig.inputs = inputs;
        sig
    }

    /// `let pattern = name;` for the arguments written as patterns.
    fn prologue(&self) -> TokenStream {
        let lets = self.params.iter().filter_map(|p| {
            p.pattern.as_ref().map(|pat| {
                let ident = &p.ident;
                quote!(let #pat = #ident;)
            })
        });
        quote!(#(#lets)*)
    }

    /// The body as a closure taking nothing (it captures the arguments).
    fn body_closure(&self) -> TokenStream {
        let prologue = self.prologue();
        let stmts = &self.item.block.stmts;
        let ret = &self.ret;
        if self.is_async {
            quote!(async move || -> #ret { #prologue #(#stmts)* })
        } else {
            quote!(move || -> #ret { #prologue #(#stmts)* })
        }
    }

    fn region(&self, args: &Args) -> TokenStream {
        let region = args.region.as_ref().map(|r| r.to_token_stream());
        let span = args.region.as_ref().map_or(Span::call_site(), |r| r.span());
        quote_spanned! {span=>
            let __dp_region_expr = &(#region);
            let __dp_region: &::dogpile::__private::CacheRegion = ::dogpile::__private::region(__dp_region_expr);
        }
    }

    fn site(&self, args: &Args) -> TokenStream {
        let name = self.name().to_string();
        let ns = match &args.namespace {
            Some(ns) => quote!(::core::option::Option::Some(#ns)),
            None => quote!(::core::option::Option::None),
        };
        let prefix = match &args.namespace {
            Some(ns) => quote!(::core::concat!(::core::module_path!(), ":", #name, "|", #ns, "|")),
            None => quote!(::core::concat!(::core::module_path!(), ":", #name, "|")),
        };
        let generator = match &args.function_key_generator {
            Some(g) => quote_spanned!(g.span()=> ::core::option::Option::Some(#g)),
            None => quote!(::core::option::Option::None),
        };
        let template = match &self.template {
            Some(pieces) => {
                let pieces = pieces.iter().map(|p| match p {
                    TemplatePieceIdx::Lit(s) => quote!(::dogpile::__private::Piece::Lit(#s)),
                    TemplatePieceIdx::Arg(i) => quote!(::dogpile::__private::Piece::Arg(#i)),
                });
                quote!(::core::option::Option::Some(&[#(#pieces),*]))
            }
            None => quote!(::core::option::Option::None),
        };
        let instance = self.instance_fn();
        quote! {
            let __dp_site = ::dogpile::__private::Site {
                info: ::dogpile::__private::FunctionInfo {
                    module_path: ::core::module_path!(),
                    name: #name,
                    namespace: #ns,
                },
                prefix: #prefix,
                generator: #generator,
                template: #template,
                instance: #instance,
            };
        }
    }

    /// `let __dp_key = …;`: the region, the site and the key.
    fn key(&self, args: &Args) -> TokenStream {
        let region = self.region(args);
        let site = self.site(args);
        let key_args = self.key_params.iter().map(|&i| {
            let p = &self.params[i];
            // The whole cast at the argument's name, so a missing `KeyArg` points there.
            let ident = &p.ident;
            quote_spanned!(p.ident.span()=> &#ident as &dyn ::dogpile::__private::KeyArg)
        });
        // The default key is also written with static dispatch, so a one-`u64` key inlines to a
        // prefix copy and an integer format (no call through `dyn KeyArg`).
        let writes = self.key_params.iter().enumerate().map(|(n, &i)| {
            let ident = &self.params[i].ident;
            let sep = (n > 0).then(|| quote!(__dp_buf.push(' ');));
            let write = quote_spanned!(ident.span()=> ::dogpile::__private::KeyArg::write_key(&#ident, __dp_buf););
            quote!(#sep #write)
        });
        let write_impl_types = match self.impl_trait_writes() {
            Some(writes) => quote!(|__dp_buf: &mut ::std::string::String| { #writes }),
            None => quote!(|_: &mut ::std::string::String| {}),
        };
        quote! {
            #region
            #site
            let __dp_key = ::dogpile::__private::Key::build(
                __dp_region,
                &__dp_site,
                &[#(#key_args),*],
                |__dp_buf: &mut ::std::string::String| { #(#writes)* },
                #write_impl_types,
            );
        }
    }

    /// What tells one instance of a generic function from another is written after the default
    /// key's arguments: `|`, then the texts joined by `,` (no argument text holds an unescaped
    /// `|`, so the key stays unambiguous). Without them, `describe(5u8)` and `describe("5")`
    /// shared the key `describe|5` and the second call got the first one's value. A function
    /// that is not generic writes none (its keys are as before).
    ///
    /// First, the type of each `impl Trait` argument of the key: known only from the argument,
    /// so written by the key's own closure.
    fn impl_trait_writes(&self) -> Option<TokenStream> {
        let idents: Vec<&Ident> = self
            .key_params
            .iter()
            .map(|&i| &self.params[i])
            .filter(|p| holds_word(p.ty.to_token_stream(), "impl"))
            .map(|p| &p.ident)
            .collect();
        (!idents.is_empty()).then(|| {
            let texts = idents
                .iter()
                .map(|ident| quote!(::core::any::type_name_of_val(&#ident)));
            Self::joined(texts, '|')
        })
    }

    /// Then the name of each type parameter and the value of each const parameter: the site's
    /// `instance`, a plain `fn` (the closure captures nothing), so a call that is not generic
    /// carries a `None` and every key of a batch is written by the same function.
    fn instance_fn(&self) -> TokenStream {
        let texts: Vec<TokenStream> = self
            .item
            .sig
            .generics
            .params
            .iter()
            .filter_map(|param| match param {
                syn::GenericParam::Type(t) => {
                    let ident = &t.ident;
                    Some(quote!(::core::any::type_name::<#ident>()))
                }
                syn::GenericParam::Const(c) => {
                    let ident = &c.ident;
                    Some(quote!(::std::string::ToString::to_string(&#ident)))
                }
                syn::GenericParam::Lifetime(_) => None,
            })
            .collect();
        if texts.is_empty() {
            return quote!(::core::option::Option::None);
        }
        let first = if self.impl_trait_writes().is_some() {
            ','
        } else {
            '|'
        };
        let writes = Self::joined(texts.into_iter(), first);
        quote!(::core::option::Option::Some(
            (|__dp_buf: &mut ::std::string::String| { #writes })
                as fn(&mut ::std::string::String)
        ))
    }

    /// Pushes `texts` onto `__dp_buf`: `first`, then the texts joined by `,`.
    fn joined(texts: impl Iterator<Item = TokenStream>, first: char) -> TokenStream {
        let pieces = texts.enumerate().map(|(n, t)| {
            let sep = if n == 0 { first } else { ',' };
            quote!(__dp_buf.push(#sep); __dp_buf.push_str(&#t);)
        });
        quote!(#(#pieces)*)
    }

    /// `let __dp_opts = …;`: expiration, should_cache_fn and the resilience options.
    fn options(&self, args: &Args, cached: &Type, dict: bool) -> TokenStream {
        let exp = args.expiration.as_ref().map(|e| {
            quote_spanned!(e.span()=> .expiration_time(::dogpile::__private::expiration(&(#e))))
        });
        let should = match (&args.should_cache_fn, dict) {
            (Some(f), false) => Some(quote_spanned!(f.span()=> .should_cache_fn(#f))),
            (Some(f), true) => Some(quote_spanned!(f.span()=>
                .should_cache_fn(|__dp_v: &::core::option::Option<#cached>| match __dp_v {
                    ::core::option::Option::Some(__dp_v) => (#f)(__dp_v),
                    ::core::option::Option::None => false,
                })
            )),
            (None, true) => {
                Some(quote!(.should_cache_fn(::dogpile::__private::is_some::<#cached>)))
            }
            (None, false) => None,
        };
        let resilience = args.resilience.iter().map(|(name, e)| {
            if crate::args::resilience_takes(&name.to_string()) == Some(crate::args::Takes::Seconds)
            {
                quote_spanned!(e.span()=> .#name(::dogpile::__private::seconds(&(#e))))
            } else {
                quote_spanned!(e.span()=> .#name(::core::convert::Into::<f64>::into(#e)))
            }
        });
        let checked = Self::checked(cached);
        let opt_ty = if dict {
            quote!(::core::option::Option<#checked>)
        } else {
            checked
        };
        let ret = &self.ret;
        match self.is_result {
            // A function returning `Result` whose error type takes a `dogpile::Error`: a waiter
            // past `hard_timeout` returns the timeout as its `Err` (chosen by the probe, so the
            // error type needs no bound); otherwise it waits, as below.
            true => quote! {
                let __dp_on_timeout = {
                    #[allow(unused_imports)]
                    use ::dogpile::__private::{TimeoutIntoErr as _, WaitsForCreator as _};
                    (&::dogpile::__private::Probe::<#ret>::new()).on_timeout()
                };
                let __dp_opts = ::dogpile::__private::waits_unless_timeout_err(
                    ::dogpile::__private::CreateOptions::<#opt_ty>::new() #exp #should #(#resilience)*,
                    __dp_on_timeout,
                );
            },
            // A decorated function that returns its value waits for a creation rather than take
            // an error and run its body beside it: `hard_timeout` does not bound it.
            false => quote! {
                let __dp_opts = ::dogpile::__private::CreateOptions::<#opt_ty>::new()
                    .waits_for_creator() #exp #should #(#resilience)*;
            },
        }
    }

    /// The array of tag texts of `tags = ["user:{id}", …]`, each built as the key's text is (an
    /// argument written by its `KeyArg`), on every call; `None` without tags.
    fn tag_list(&self, args: &Args) -> syn::Result<Option<TokenStream>> {
        if args.tags.is_empty() {
            return Ok(None);
        }
        let mut tags = Vec::new();
        for lit in &args.tags {
            let mut writes = Vec::new();
            for piece in parse_template(lit, "tags")? {
                match piece {
                    TemplatePiece::Lit(s) => writes.push(quote!(__dp_t.push_str(#s);)),
                    TemplatePiece::Arg(name) => {
                        let param = self.params.iter().find(|p| {
                            p.ident == name && !p.ident.to_string().starts_with("__dp_arg")
                        });
                        let Some(param) = param else {
                            return Err(syn::Error::new(
                                lit.span(),
                                format!(
                                    "`{{{name}}}` in `tags` is not an argument of `{}`",
                                    self.name()
                                ),
                            ));
                        };
                        let ident = &param.ident;
                        writes.push(quote_spanned!(lit.span()=>
                            ::dogpile::__private::KeyArg::write_key(&#ident, &mut __dp_t);
                        ));
                    }
                }
            }
            tags.push(quote!({
                let mut __dp_t = ::std::string::String::new();
                #(#writes)*
                __dp_t
            }));
        }
        Ok(Some(quote!([#(#tags),*])))
    }

    /// `cached`, through the `Cacheable` projection: a type that cannot be cached fails there once,
    /// at the return type, and the generated calls then see an error type and stay quiet.
    fn checked(cached: &Type) -> TokenStream {
        quote_spanned!(cached.span()=> <#cached as ::dogpile::__private::Cacheable>::Out)
    }

    fn doc(text: String) -> TokenStream {
        quote!(#[doc = #text])
    }

    // --------------------------------------------------------------------------------------------
    // #[cache_on_arguments]

    fn expand_single(&self, args: &Args) -> syn::Result<TokenStream> {
        let name = self.name();
        let vis = &self.item.vis;
        let attrs = &self.item.attrs;
        let shared = self.shared_attrs();
        let cached = &self.cached;
        let ret = &self.ret;
        let key = self.key(args);
        let opts = self.options(args, cached, false);
        let tags = self.tag_list(args)?;
        let opts = match &tags {
            Some(tags) => quote!(#opts let __dp_opts = __dp_opts.tags(#tags);),
            None => opts,
        };
        let body = self.body_closure();
        let dot_await = self.is_async.then(|| quote!(.await));
        let ct = Self::checked(cached);

        let wrapper_sig = self.plain_sig();
        let on_timeout = self.is_result.then(|| quote!(__dp_on_timeout,));
        let call = match (self.is_result, self.is_async) {
            (false, false) => quote!(::dogpile::__private::get_or_create::<#ct, _>),
            (true, false) => quote!(::dogpile::__private::try_get_or_create::<#ct, _, _>),
            (false, true) => quote!(::dogpile::__private::get_or_create_async::<#ct, _, _>),
            (true, true) => quote!(::dogpile::__private::try_get_or_create_async::<#ct, _, _, _>),
        };
        let call = match &args.background {
            None => call,
            Some(name) if self.is_result || self.is_async => {
                return Err(syn::Error::new(
                    name.span(),
                    "`background` works on functions that are not `async` and do not return `Result`: their body moves to the region's async creation runner",
                ))
            }
            Some(_) => quote!(::dogpile::__private::get_or_create_in_background::<#ct, _>),
        };
        let wrapper = quote! {
            #(#attrs)*
            #vis #wrapper_sig {
                #key
                #opts
                #call(__dp_region, &__dp_key, &__dp_opts, #on_timeout #body) #dot_await
            }
        };

        let a = if self.is_async { "_async" } else { "" };
        let get_fn = format_ident!("get{}", a);
        let set_fn = format_ident!("set{}", a);
        let invalidate_fn = format_ident!("invalidate{}", a);
        let refresh_fn = match self.is_result {
            false => {
                let f = format_ident!("refresh{}", a);
                quote!(#f::<#ct>)
            }
            true => {
                let f = format_ident!("refresh_result{}", a);
                quote!(#f::<#ct, _>)
            }
        };

        // A blocking `_get` honours the function's own expiration; the async one reads with the
        // region's (the region has no async read with an expiration).
        let get_call = match (&args.expiration, self.is_async) {
            // A tagged value is read with its tags, so a tag's invalidation holds here too.
            _ if tags.is_some() => {
                let tagged = format_ident!("get_tagged{}", a);
                quote!(::dogpile::__private::#tagged::<#ct>(__dp_region, &__dp_key, &__dp_opts) #dot_await)
            }
            (Some(e), false) => quote_spanned! {e.span()=>
                ::dogpile::__private::get_with_expiration::<#ct>(
                    __dp_region,
                    &__dp_key,
                    ::dogpile::__private::expiration(&(#e)),
                )
            },
            _ => quote!(::dogpile::__private::#get_fn::<#ct>(__dp_region, &__dp_key) #dot_await),
        };
        let get_opts = tags.is_some().then(|| opts.clone());
        let get_sig = self.companion_sig(
            self.companion("get"),
            None,
            false,
            syn::parse_quote!(-> ::core::option::Option<#cached>),
        );
        let get_doc = Self::doc(format!(
            " The value `{name}` has cached for these arguments, if any, without calling it (`None` when the cache fails; the error is logged)."
        ));
        let value_name = if self.params.iter().any(|p| p.ident == "value") {
            format_ident!("__dp_value_to_set")
        } else {
            format_ident!("value")
        };
        let set_sig = self.companion_sig(
            self.companion("set"),
            Some(quote!(#value_name: #cached)),
            false,
            ReturnType::Default,
        );
        let set_doc = Self::doc(format!(
            " Stores `value` as the result of `{name}` for these arguments, without calling it (a cache failure is logged)."
        ));
        let inv_sig = self.companion_sig(
            self.companion("invalidate"),
            None,
            false,
            ReturnType::Default,
        );
        let inv_doc = Self::doc(format!(
            " Deletes what `{name}` has cached for these arguments, so that the next call runs it (a cache failure is logged)."
        ));
        let refresh_sig = self.companion_sig(
            self.companion("refresh"),
            None,
            true,
            syn::parse_quote!(-> #ret),
        );
        let refresh_doc = Self::doc(format!(
            " Runs `{name}` without looking in the cache, stores what it returns{} and returns it.",
            if self.is_result { " (when `Ok`)" } else { "" }
        ));
        let mut uncached_sig = self.item.sig.clone();
        uncached_sig.ident = self.companion("uncached");
        let uncached_doc = Self::doc(format!(
            " Runs `{name}` without the cache: neither reads nor stores."
        ));
        let block = &self.item.block;

        Ok(quote! {
            #wrapper

            #get_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #get_sig {
                #key
                #get_opts
                #get_call
            }

            #set_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #set_sig {
                #key
                ::dogpile::__private::#set_fn::<#ct>(__dp_region, &__dp_key, #value_name) #dot_await
            }

            #inv_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #inv_sig {
                #key
                ::dogpile::__private::#invalidate_fn(__dp_region, &__dp_key) #dot_await
            }

            #refresh_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #refresh_sig {
                #key
                let __dp_value = (#body)() #dot_await;
                ::dogpile::__private::#refresh_fn(__dp_region, &__dp_key, __dp_value) #dot_await
            }

            #uncached_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #uncached_sig #block
        })
    }

    // --------------------------------------------------------------------------------------------
    // #[cache_multi_on_arguments]

    fn expand_multi(&self, args: &Args) -> syn::Result<TokenStream> {
        if let Some(a) = &self.item.sig.asyncness {
            return Err(syn::Error::new(
                a.span(),
                "#[cache_multi_on_arguments] does not support `async fn` yet: use a blocking function, or #[cache_on_arguments] per item",
            ));
        }
        let name = self.name();
        let ids_idx = match self.key_params.as_slice() {
            [i] => *i,
            [] => {
                return Err(syn::Error::new(
                    self.item.sig.paren_token.span.join(),
                    "a batch function takes its ids as one slice argument: `ids: &[K]`",
                ))
            }
            [_, second, ..] => {
                let p = &self.params[*second];
                return Err(syn::Error::new(
                    p.ident.span(),
                    format!(
                        "a batch function takes one slice of ids; leave the other arguments out of the key with `ignore = [{}]`",
                        p.ident
                    ),
                ));
            }
        };
        let ids = &self.params[ids_idx];
        let elem = match &ids.ty {
            Type::Reference(r) => match &*r.elem {
                Type::Slice(s) => (*s.elem).clone(),
                _ => return Err(not_a_slice(&ids.ty)),
            },
            _ => return Err(not_a_slice(&ids.ty)),
        };
        let value = match generic_arg(&self.ret, if args.asdict { 1 } else { 0 }) {
            Some(v) => v.clone(),
            None => {
                return Err(syn::Error::new(
                    self.ret.span(),
                    if args.asdict {
                        "a batch function with `asdict = true` returns a map: `HashMap<K, V>` (or any map of `(K, V)` pairs)"
                    } else {
                        "a batch function returns `Vec<V>`, one value per id in order (or a map `HashMap<K, V>` with `asdict = true`)"
                    },
                ))
            }
        };
        let vis = &self.item.vis;
        let attrs = &self.item.attrs;
        let shared = self.shared_attrs();
        let ret = &self.ret;
        let region = self.region(args);
        let site = self.site(args);
        let opts = self.options(args, &value, args.asdict);
        let ids_ident = &ids.ident;
        let prologue = self.prologue();
        let stmts = &self.item.block.stmts;
        let slice_ty = quote!(&[#elem]);
        let body = quote!(move |#ids_ident: #slice_ty| -> #ret { #prologue #(#stmts)* });
        let vt = Self::checked(&value);
        let elem_check = quote_spanned!(ids.ty.span()=>
            ::dogpile::__private::assert_key_items::<#elem>(#ids_ident);
        );
        let dict = args.asdict;
        let call = if dict {
            quote!(::dogpile::__private::get_or_create_multi_dict::<#elem, #vt, #ret, _>)
        } else {
            quote!(::dogpile::__private::get_or_create_multi::<#elem, #vt, _>)
        };

        let wrapper_sig = self.plain_sig();
        let wrapper = quote! {
            #(#attrs)*
            #vis #wrapper_sig {
                #elem_check
                #region
                #site
                #opts
                #call(__dp_region, &__dp_site, &__dp_opts, #ids_ident, #body)
            }
        };

        let get_out: ReturnType = if dict {
            syn::parse_quote!(-> #ret)
        } else {
            syn::parse_quote!(-> ::std::vec::Vec<::core::option::Option<#value>>)
        };
        let get_sig = self.companion_sig(self.companion("get"), None, false, get_out);
        let get_call = if dict {
            quote!(::dogpile::__private::get_multi_dict::<#elem, #vt, #ret>(__dp_region, &__dp_site, #ids_ident))
        } else {
            quote!(::dogpile::__private::get_multi::<#elem, #vt>(__dp_region, &__dp_site, #ids_ident))
        };
        let get_doc = Self::doc(format!(
            " What `{name}` has cached for these ids, without calling it: {}",
            if dict {
                "the ids found, with their values."
            } else {
                "one `Option` per id, in order."
            }
        ));

        let mut set_sig = self.companion_sig(
            self.companion("set"),
            Some(quote!(items: impl ::core::iter::IntoIterator<Item = (#elem, #value)>)),
            false,
            ReturnType::Default,
        );
        // `_set` takes pairs (or a map), not the ids.
        set_sig.inputs = set_sig
            .inputs
            .into_iter()
            .filter(|i| match i {
                FnArg::Typed(pt) => !matches!(&*pt.pat, Pat::Ident(pi) if pi.ident == *ids_ident),
                FnArg::Receiver(_) => true,
            })
            .collect();
        let set_fn = if dict {
            quote!(::dogpile::__private::set_multi_dict::<#elem, #vt>)
        } else {
            quote!(::dogpile::__private::set_multi::<#elem, #vt>)
        };
        let set_doc = Self::doc(format!(
            " Stores values as the results of `{name}` for their ids, without calling it: `(id, value)` pairs, or a map."
        ));

        let inv_sig = self.companion_sig(
            self.companion("invalidate"),
            None,
            false,
            ReturnType::Default,
        );
        let inv_doc = Self::doc(format!(
            " Deletes what `{name}` has cached for these ids, so that the next call creates them."
        ));
        let refresh_sig = self.companion_sig(
            self.companion("refresh"),
            None,
            true,
            syn::parse_quote!(-> #ret),
        );
        let refresh_call = if dict {
            quote!(::dogpile::__private::refresh_multi_dict::<#elem, #vt, #ret>(__dp_region, &__dp_site, __dp_value))
        } else {
            quote!(::dogpile::__private::refresh_multi::<#elem, #vt>(__dp_region, &__dp_site, #ids_ident, __dp_value))
        };
        let refresh_doc = Self::doc(format!(
            " Runs `{name}` for every id without looking in the cache, stores what it returns and returns it."
        ));
        let mut uncached_sig = self.item.sig.clone();
        uncached_sig.ident = self.companion("uncached");
        let uncached_doc = Self::doc(format!(
            " Runs `{name}` without the cache: neither reads nor stores."
        ));
        let block = &self.item.block;

        Ok(quote! {
            #wrapper

            #get_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #get_sig {
                #region
                #site
                #get_call
            }

            #set_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #set_sig {
                #region
                #site
                #set_fn(__dp_region, &__dp_site, items)
            }

            #inv_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #inv_sig {
                #region
                #site
                ::dogpile::__private::invalidate_multi::<#elem>(__dp_region, &__dp_site, #ids_ident)
            }

            #refresh_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #refresh_sig {
                #region
                #site
                let __dp_value = (#body)(#ids_ident);
                #refresh_call
            }

            #uncached_doc
            #(#shared)*
            #[allow(dead_code)]
            #vis #uncached_sig #block
        })
    }
}

fn not_a_slice(ty: &Type) -> syn::Error {
    syn::Error::new(
        ty.span(),
        "the ids of a batch function must be a slice: `ids: &[K]`",
    )
}

/// `T` of a return type named `Result<T, …>` (`std::result::Result`, `io::Result<T>`, an alias).
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    generic_arg(ty, 0)
}

/// The `n`th type argument of the last segment of a path type.
fn generic_arg(ty: &Type, n: usize) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .nth(n)
}

/// Whether a type's tokens hold the keyword `word` (`impl` of an `impl Trait` argument, `dyn` of
/// a trait object), at the top or inside `&`, a tuple or a path's arguments.
fn holds_word(tokens: TokenStream, word: &str) -> bool {
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == word,
        proc_macro2::TokenTree::Group(g) => holds_word(g.stream(), word),
        _ => false,
    })
}

/// The error for a key argument whose type holds `dyn`, at its type, with the ways out: the
/// ids of a batch function need a type the keys can record; another argument can also be left
/// out of the key (and out of its template, which names every other argument).
fn dyn_key_argument(p: &Param, kind: Kind, has_template: bool) -> syn::Error {
    const WHY: &str = "two values of different types behind a `dyn` can write the same key text (`&5u8` and `&\"5\"` both write `5`) and the key cannot record which type it was, so two calls would share one key";
    let is_ids = kind == Kind::Multi
        && matches!(&p.ty, Type::Reference(r) if matches!(&*r.elem, Type::Slice(_)));
    let message = if is_ids {
        format!(
            "the ids of a batch function cannot have a `dyn` type: {WHY}; take ids of a concrete type or of a type parameter (`ids: &[K]`, whose type the keys record)"
        )
    } else {
        // `ignore` names plain arguments (`mut x` too), not patterns such as `(a, b)`.
        let named = p
            .pattern
            .as_ref()
            .is_none_or(|pat| matches!(pat, Pat::Ident(_)));
        let (shown, ignore) = if named {
            let name = &p.ident;
            let template = if has_template {
                format!(" (and `{{{name}}}` out of `key = \"…\"`)")
            } else {
                String::new()
            };
            (
                name.to_string(),
                format!(", or leave it out of the key with `ignore = [{name}]`{template}"),
            )
        } else {
            let pat = p
                .pattern
                .as_ref()
                .map(|pat| pat.to_token_stream().to_string());
            (pat.unwrap_or_default(), String::new())
        };
        format!(
            "argument `{shown}` cannot be part of the key: {WHY}; take a concrete type, a type parameter or `impl Trait` (whose type the key records){ignore}"
        )
    };
    syn::Error::new_spanned(&p.ty, message)
}
