//! `#[cache_impl]`: cached methods in an `impl Trait for Type` block.
//!
//! The attribute expands the cache attributes of the block's methods itself (the same expansion
//! as a method in an inherent block), keeps each decorated method in the block, and moves its
//! companions into an inherent `impl Type` block of their own: the `impl` of a trait can hold
//! only the trait's methods.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{Attribute, Ident, ItemFn, ItemImpl, Visibility};

use crate::args::{Kind, RawArgs};
use crate::errors::Errors;
use crate::expand::{carried_to_companions, generate, with_item};

/// What `#[cache_impl(…)]` says.
enum Companions {
    /// Companions with this visibility; `None`: private in a trait's block, the method's own in
    /// an inherent block.
    With(Option<Visibility>),
    /// `no_companions`: none, for blocks whose type cannot have an inherent block (a type of
    /// another crate, a reference, a blanket `impl<T> Trait for T`).
    Without,
}

impl syn::parse::Parse for Companions {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Ok(Companions::With(None));
        }
        if input.peek(Ident) && !input.peek(syn::Token![pub]) {
            let word: Ident = input.parse()?;
            if word == "no_companions" && input.is_empty() {
                return Ok(Companions::Without);
            }
            return Err(syn::Error::new(
                word.span(),
                "expected a visibility for the companions (`pub`, `pub(crate)`) or `no_companions`",
            ));
        }
        Ok(Companions::With(Some(input.parse()?)))
    }
}

/// Expands `#[cache_impl]` on `item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let companions_wanted = match syn::parse2::<Companions>(attr) {
        Ok(c) => c,
        Err(e) => return with_item(e, item),
    };
    let Ok(mut block) = syn::parse2::<ItemImpl>(item.clone()) else {
        let err = syn::Error::new(
            Span::call_site(),
            "#[cache_impl] applies to an `impl` block (`impl Trait for Type` or `impl Type`) whose methods have #[cache_on_arguments] or #[cache_multi_on_arguments]",
        );
        return with_item(err, item);
    };
    let mut errors = Errors::new();
    let mut companions_wanted = companions_wanted;
    if let Companions::With(_) = companions_wanted {
        if let Err(e) = check_inherent_block_possible(&block) {
            errors.push(e);
            // Only this error, not the compiler's about a block that cannot be.
            companions_wanted = Companions::Without;
        }
    }
    let trait_path = block.trait_.as_ref().map(|(_, path, _)| path.clone());
    let self_ty = (*block.self_ty).clone();
    let mut companions = Vec::new();
    let mut used_paths: Vec<syn::Path> = Vec::new();
    for impl_item in &mut block.items {
        let syn::ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let Some((pos, kind)) = method
            .attrs
            .iter()
            .enumerate()
            .find_map(|(i, a)| cache_attr_kind(a).map(|k| (i, k)))
        else {
            continue;
        };
        let attr = method.attrs.remove(pos);
        used_paths.push(attr.path().clone());
        let mut args = match attr.meta {
            syn::Meta::List(list) => list.tokens,
            syn::Meta::Path(_) => TokenStream::new(),
            syn::Meta::NameValue(nv) => {
                let err = syn::Error::new(
                    nv.eq_token.span,
                    "write the options in parentheses: #[cache_on_arguments(region = …)]",
                );
                errors.push(err);
                continue;
            }
        };
        if let Some(trait_path) = &trait_path {
            args = with_default_namespace(args, &self_ty, trait_path);
        }
        let func = ItemFn {
            attrs: method.attrs.clone(),
            vis: method.vis.clone(),
            sig: method.sig.clone(),
            block: Box::new(method.block.clone()),
        };
        let fns = match generate(kind, args, &func).and_then(syn::parse2::<Fns>) {
            Ok(Fns(fns)) => fns,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for mut f in fns {
            if f.sig.ident == method.sig.ident {
                *method = f;
                continue;
            }
            match &companions_wanted {
                Companions::Without => continue,
                Companions::With(Some(vis)) => f.vis = vis.clone(),
                Companions::With(None) if trait_path.is_some() => f.vis = Visibility::Inherited,
                Companions::With(None) => {}
            }
            if let Some(trait_path) = &trait_path {
                // `Self::Id` names the trait's associated type in the trait's block only.
                QualifySelf {
                    self_ty: &self_ty,
                    trait_path,
                }
                .visit_impl_item_fn_mut(&mut f);
            }
            companions.push(f);
        }
    }
    if used_paths.is_empty() {
        errors.at(
            Span::call_site(),
            "#[cache_impl]: no method of this block has #[cache_on_arguments] or #[cache_multi_on_arguments]",
        );
    }
    let companions = (!companions.is_empty()).then(|| {
        let attrs = block.attrs.iter().filter(|a| carried_to_companions(a));
        let (impl_generics, _, where_clause) = block.generics.split_for_impl();
        quote! {
            #(#attrs)*
            impl #impl_generics #self_ty #where_clause {
                #(#companions)*
            }
        }
    });
    // The attributes were expanded here, so the compiler never resolves their paths: name them
    // once, or the caller's `use dogpile::cache_on_arguments` would be reported unused.
    let mut seen = Vec::new();
    used_paths.retain(|p| {
        let text = p.to_token_stream().to_string();
        !seen.contains(&text) && {
            seen.push(text);
            true
        }
    });
    let errors = errors.into_compile_errors();
    quote! {
        #errors
        #block
        #companions
        #(
            #[allow(unused_imports)]
            use #used_paths as _;
        )*
    }
}

/// Which cache attribute `attr` is, whatever path names it (`cache_on_arguments`,
/// `dogpile::cache_on_arguments`).
fn cache_attr_kind(attr: &Attribute) -> Option<Kind> {
    match attr.path().segments.last()?.ident.to_string().as_str() {
        "cache_on_arguments" => Some(Kind::Single),
        "cache_multi_on_arguments" => Some(Kind::Multi),
        _ => None,
    }
}

/// The options with `namespace = "<Type as Trait>"` added when there is no namespace. The type
/// keeps two types that implement one trait in one module apart; the trait keeps apart the
/// impls of one type: two traits with a method of one name and arguments (`Render::render` and
/// `Html::render`), or one generic trait twice (`Loader<User>`, `Loader<Order>`). With the type
/// alone, those calls shared a key and one impl's call returned the other's value.
fn with_default_namespace(
    args: TokenStream,
    self_ty: &syn::Type,
    trait_path: &syn::Path,
) -> TokenStream {
    let has_namespace = syn::parse2::<RawArgs>(args.clone())
        .is_ok_and(|raw| raw.names().any(|name| name == "namespace"));
    if has_namespace {
        return args;
    }
    let name = format!("<{} as {}>", compact(self_ty), compact(trait_path));
    let name = syn::LitStr::new(&name, self_ty.span());
    if args.is_empty() {
        quote!(namespace = #name)
    } else {
        quote!(#args, namespace = #name)
    }
}

/// The text of `tokens` without whitespace: the printer puts spaces between tokens
/// (`Loader < User >`), which the key would carry but nobody wrote.
fn compact(tokens: &impl ToTokens) -> String {
    tokens
        .to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// Checks that the companions' inherent block can exist: the self type is a path, not one of
/// the block's own type parameters (a blanket impl), and every parameter of the block appears
/// in it (a parameter used only by the trait cannot be a parameter of an inherent block).
fn check_inherent_block_possible(block: &ItemImpl) -> syn::Result<()> {
    const HINT: &str = "write #[cache_impl(no_companions)] to cache the methods without companions";
    let syn::Type::Path(path) = &*block.self_ty else {
        return Err(syn::Error::new(
            block.self_ty.span(),
            format!(
                "the companions need an inherent `impl` block, which this type cannot have; {HINT}"
            ),
        ));
    };
    let mut named = NamedIdents::default();
    named.visit_type_path(path);
    for param in &block.generics.params {
        let (ident, what) = match param {
            syn::GenericParam::Type(t) => (&t.ident, "type"),
            syn::GenericParam::Const(c) => (&c.ident, "const"),
            syn::GenericParam::Lifetime(l) => (&l.lifetime.ident, "lifetime"),
        };
        if path.qself.is_none() && path.path.is_ident(ident) {
            return Err(syn::Error::new(
                block.self_ty.span(),
                format!(
                    "a blanket `impl` cannot have an inherent block for its companions; {HINT}"
                ),
            ));
        }
        if !named.0.contains(ident) {
            return Err(syn::Error::new(
                param.span(),
                format!(
                    "{what} parameter `{ident}` is not used by `{}`, so the companions' inherent block cannot have it; {HINT}",
                    compact(path)
                ),
            ));
        }
    }
    Ok(())
}

/// Every identifier (and lifetime name) in a type.
#[derive(Default)]
struct NamedIdents(Vec<Ident>);

impl<'ast> Visit<'ast> for NamedIdents {
    fn visit_ident(&mut self, ident: &'ast Ident) {
        self.0.push(ident.clone());
    }
}

/// Rewrites `Self::Name` types as `<Type as Trait>::Name`.
struct QualifySelf<'a> {
    self_ty: &'a syn::Type,
    trait_path: &'a syn::Path,
}

impl VisitMut for QualifySelf<'_> {
    fn visit_type_path_mut(&mut self, ty: &mut syn::TypePath) {
        syn::visit_mut::visit_type_path_mut(self, ty);
        let segments = &ty.path.segments;
        if ty.qself.is_some() || segments.len() < 2 || segments[0].ident != "Self" {
            return;
        }
        let rest: Vec<_> = segments.iter().skip(1).collect();
        let (self_ty, trait_path) = (self.self_ty, self.trait_path);
        *ty = syn::parse_quote!(<#self_ty as #trait_path>::#(#rest)::*);
    }
}

/// The functions one expansion makes: the decorated function and its companions.
struct Fns(Vec<syn::ImplItemFn>);

impl syn::parse::Parse for Fns {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let mut fns = Vec::new();
        while !input.is_empty() {
            fns.push(input.parse()?);
        }
        Ok(Fns(fns))
    }
}
