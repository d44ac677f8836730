//! Parsing the attributes' options, with errors that point at the option at fault.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{bracketed, Expr, Ident, LitBool, LitStr, Token};

use crate::errors::Errors;

/// Which attribute is being parsed: they take different options.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Single,
    Multi,
}

impl Kind {
    pub(crate) fn attr_name(self) -> &'static str {
        match self {
            Kind::Single => "cache_on_arguments",
            Kind::Multi => "cache_multi_on_arguments",
        }
    }

    /// The options this attribute takes: its own, then the resilience options (one list for
    /// both attributes, [`RESILIENCE`]).
    fn options(self) -> Vec<&'static str> {
        let own: &[&str] = match self {
            Kind::Single => &[
                "region",
                "namespace",
                "expiration_time",
                "expiration",
                "should_cache_fn",
                "function_key_generator",
                "key",
                "ignore",
                "background",
                "tags",
            ],
            Kind::Multi => &[
                "region",
                "namespace",
                "expiration_time",
                "expiration",
                "should_cache_fn",
                "asdict",
                "ignore",
            ],
        };
        own.iter().chain(&RESILIENCE).copied().collect()
    }

    /// The options an error lists as this attribute's: those it takes, less those it refuses.
    fn offered(self) -> Vec<&'static str> {
        let mut options = self.options();
        options.retain(|o| self.refuses(o).is_none());
        options
    }

    /// Why this attribute refuses the resilience option `name`, if it does: a batch body
    /// borrows its ids and runs on the caller's thread, so no timeout can bound it.
    fn refuses(self, name: &str) -> Option<String> {
        (self == Kind::Multi && CREATOR_TIMEOUTS.contains(&name)).then(|| {
            format!(
                "`{name}` cannot apply to #[cache_multi_on_arguments]: the batch body borrows its ids and runs on the caller's thread, so no timeout can bound it; use it on #[cache_on_arguments] with `background = true`"
            )
        })
    }
}

/// What a resilience option's value is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Takes {
    /// Seconds (an integer or a float) or a `Duration`.
    Seconds,
    /// A number (`f64`).
    Number,
}

/// The resilience options, the same on both attributes, with what each takes: each calls the
/// `CreateOptions` method of its name. The one list of them in this crate.
const RESILIENCE_OPTIONS: [(&str, Takes); 6] = [
    ("fail_safe_max_duration", Takes::Seconds),
    ("fail_safe_throttle", Takes::Seconds),
    ("soft_timeout", Takes::Seconds),
    ("hard_timeout", Takes::Seconds),
    ("eager_refresh", Takes::Number),
    ("early_expiration_beta", Takes::Number),
];

/// The names of the resilience options.
pub(crate) const RESILIENCE: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < names.len() {
        names[i] = RESILIENCE_OPTIONS[i].0;
        i += 1;
    }
    names
};

/// What the resilience option `name` takes; `None` for another option.
pub(crate) fn resilience_takes(name: &str) -> Option<Takes> {
    RESILIENCE_OPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, takes)| takes)
}

/// The resilience options that bound a running creator: refused where the body cannot move.
const CREATOR_TIMEOUTS: [&str; 2] = ["soft_timeout", "hard_timeout"];

/// The options of one attribute, as written.
pub(crate) struct Args {
    pub(crate) region: Option<Expr>,
    pub(crate) namespace: Option<LitStr>,
    pub(crate) expiration: Option<Expr>,
    pub(crate) should_cache_fn: Option<Expr>,
    pub(crate) function_key_generator: Option<Expr>,
    pub(crate) key: Option<LitStr>,
    pub(crate) ignore: Vec<Ident>,
    pub(crate) asdict: bool,
    /// `background = true`: where the option was written.
    pub(crate) background: Option<Ident>,
    /// `tags = ["user:{id}", …]`: templates over the arguments, as written.
    pub(crate) tags: Vec<LitStr>,
    /// The resilience options (`fail_safe_max_duration = 60`, `eager_refresh = 0.8`, …), each
    /// the name of the `CreateOptions` method it calls and its value.
    pub(crate) resilience: Vec<(Ident, Expr)>,
}

/// The raw options: names with their values, parsed before the attribute kind is known.
pub(crate) struct RawArgs(Vec<(Ident, Value)>);

impl RawArgs {
    /// The names of the options given.
    pub(crate) fn names(&self) -> impl Iterator<Item = &Ident> {
        self.0.iter().map(|(name, _)| name)
    }
}

pub(crate) enum Value {
    Expr(Expr),
    /// `[a, b]` or `["x", "y"]`: what the list holds is checked by the option.
    List(Vec<Expr>),
}

impl Parse for RawArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let name: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("expected `{name} = …`: every option takes a value"),
                ));
            }
            input.parse::<Token![=]>()?;
            let value = if input.peek(syn::token::Bracket) {
                let content;
                bracketed!(content in input);
                let items = content.parse_terminated(Expr::parse, Token![,])?;
                Value::List(items.into_iter().collect())
            } else {
                Value::Expr(input.parse()?)
            };
            out.push((name, value));
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(RawArgs(out))
    }
}

fn expect_str(name: &Ident, value: Value) -> syn::Result<LitStr> {
    match value {
        Value::Expr(Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        })) => Ok(s),
        Value::Expr(e) => Err(syn::Error::new(
            e.span(),
            format!("`{name}` takes a string literal: `{name} = \"…\"`"),
        )),
        Value::List(_) => Err(syn::Error::new(
            name.span(),
            format!("`{name}` takes a string literal: `{name} = \"…\"`"),
        )),
    }
}

fn expect_expr(name: &Ident, value: Value) -> syn::Result<Expr> {
    match value {
        Value::Expr(e) => Ok(e),
        Value::List(_) => Err(syn::Error::new(
            name.span(),
            format!("`{name}` takes an expression, not a list"),
        )),
    }
}

impl Args {
    /// Checks the options against what `kind` accepts.
    pub(crate) fn from_raw(raw: RawArgs, kind: Kind) -> syn::Result<Args> {
        let mut args = Args {
            region: None,
            namespace: None,
            expiration: None,
            should_cache_fn: None,
            function_key_generator: None,
            key: None,
            ignore: Vec::new(),
            asdict: false,
            background: None,
            tags: Vec::new(),
            resilience: Vec::new(),
        };
        let mut seen: Vec<String> = Vec::new();
        let mut errors = Errors::new();
        for (name, value) in raw.0 {
            let s = name.to_string();
            if let Some(why) = kind.refuses(&s) {
                errors.push(syn::Error::new(name.span(), why));
                continue;
            }
            if !kind.options().contains(&s.as_str()) {
                errors.push(syn::Error::new(
                    name.span(),
                    format!(
                        "unknown option `{s}` of #[{}]; expected one of: {}",
                        kind.attr_name(),
                        kind.offered().join(", ")
                    ),
                ));
                continue;
            }
            let canonical = if s == "expiration" {
                "expiration_time".to_owned()
            } else {
                s.clone()
            };
            if seen.contains(&canonical) {
                errors.push(syn::Error::new(
                    name.span(),
                    format!("`{s}` is given twice"),
                ));
                continue;
            }
            seen.push(canonical);
            let parsed: syn::Result<()> = (|| {
                match s.as_str() {
                    "region" => args.region = Some(expect_expr(&name, value)?),
                    "namespace" => args.namespace = Some(expect_str(&name, value)?),
                    "expiration_time" | "expiration" => {
                        args.expiration = Some(expect_expr(&name, value)?)
                    }
                    "should_cache_fn" => args.should_cache_fn = Some(expect_expr(&name, value)?),
                    "function_key_generator" => {
                        args.function_key_generator = Some(expect_expr(&name, value)?)
                    }
                    "key" => args.key = Some(expect_str(&name, value)?),
                    "ignore" => {
                        match value {
                            Value::List(items) => {
                                args.ignore = items
                                    .into_iter()
                                    .map(|e| match e {
                                        Expr::Path(p) if p.path.get_ident().is_some() => {
                                            Ok(p.path.segments[0].ident.clone())
                                        }
                                        e => Err(syn::Error::new(
                                            e.span(),
                                            "`ignore` takes a list of argument names: `ignore = [conn, log]`",
                                        )),
                                    })
                                    .collect::<syn::Result<_>>()?
                            }
                            Value::Expr(Expr::Path(p)) if p.path.get_ident().is_some() => {
                                args.ignore = vec![p.path.segments[0].ident.clone()]
                            }
                            Value::Expr(e) => return Err(syn::Error::new(
                                e.span(),
                                "`ignore` takes a list of argument names: `ignore = [conn, log]`",
                            )),
                        }
                    }
                    "background" => match value {
                        Value::Expr(Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Bool(LitBool { value, .. }),
                            ..
                        })) => args.background = value.then(|| name.clone()),
                        _ => {
                            return Err(syn::Error::new(
                                name.span(),
                                "`background` takes `true` or `false`",
                            ))
                        }
                    },
                    "tags" => {
                        let tag_list = "`tags` takes a list of string templates: `tags = [\"user:{id}\", \"users\"]`";
                        let items = match value {
                            Value::List(items) => items,
                            Value::Expr(e) => return Err(syn::Error::new(e.span(), tag_list)),
                        };
                        for item in items {
                            match item {
                                Expr::Lit(syn::ExprLit {
                                    lit: syn::Lit::Str(s),
                                    ..
                                }) => {
                                    // Checked here, so a bad template points at itself.
                                    parse_template(&s, "tags")?;
                                    args.tags.push(s)
                                }
                                e => return Err(syn::Error::new(e.span(), tag_list)),
                            }
                        }
                    }
                    "asdict" => match value {
                        Value::Expr(Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Bool(LitBool { value, .. }),
                            ..
                        })) => args.asdict = value,
                        _ => {
                            return Err(syn::Error::new(
                                name.span(),
                                "`asdict` takes `true` or `false`",
                            ))
                        }
                    },
                    r if RESILIENCE.contains(&r) => {
                        let e = expect_expr(&name, value)?;
                        check_resilience_literal(&s, &e)?;
                        args.resilience.push((name.clone(), e));
                    }
                    _ => {}
                }
                Ok(())
            })();
            errors.ok(parsed);
        }
        if args.key.is_some() {
            if let Some(g) = &args.function_key_generator {
                errors.push(syn::Error::new(
                    g.span(),
                    "`key` and `function_key_generator` both make the key: give one of them",
                ));
            }
        }
        if args.region.is_none() && !seen.iter().any(|s| s == "region") {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!(
                    "#[{}] needs `region = …`: the region that caches this function, e.g. `region = REGION` with `static REGION: dogpile::CacheRegion = dogpile::CacheRegion::new();`",
                    kind.attr_name()
                ),
            ));
        }
        errors.finish().map(|()| args)
    }
}

/// A literal value of a resilience option that no region can use is a compile error (other
/// values are checked when the call runs).
fn check_resilience_literal(name: &str, e: &Expr) -> syn::Result<()> {
    let number = |e: &Expr| -> Option<f64> {
        match e {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Float(f),
                ..
            }) => f.base10_parse().ok(),
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(i),
                ..
            }) => i.base10_parse().ok(),
            Expr::Unary(syn::ExprUnary {
                op: syn::UnOp::Neg(_),
                expr,
                ..
            }) => match &**expr {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Float(f),
                    ..
                }) => f.base10_parse::<f64>().ok().map(|x| -x),
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(i),
                    ..
                }) => i.base10_parse::<f64>().ok().map(|x| -x),
                _ => None,
            },
            _ => None,
        }
    };
    let Some(x) = number(e) else {
        return Ok(());
    };
    let problem = match name {
        "eager_refresh" if !(x > 0.0 && x < 1.0) => Some(format!(
            "`eager_refresh` takes a fraction of the expiration time between 0 and 1 (exclusive), such as `eager_refresh = 0.8`; got {x}"
        )),
        "early_expiration_beta" if !(x.is_finite() && x > 0.0) => Some(format!(
            "`early_expiration_beta` takes a positive number (1.0 is XFetch's default); got {x}"
        )),
        d if resilience_takes(d) == Some(Takes::Seconds) && x < 0.0 => Some(format!(
            "`{d}` takes a number of seconds (0 or more) or a `Duration`; got {x}"
        )),
        _ => None,
    };
    match problem {
        Some(message) => Err(syn::Error::new(e.span(), message)),
        None => Ok(()),
    }
}

/// One piece of a parsed `key = "…"` template.
pub(crate) enum TemplatePiece {
    Lit(String),
    Arg(String),
}

/// Parses `user:{id}:{lang}`; `{{` and `}}` are literal braces.
pub(crate) fn parse_template(lit: &LitStr, option: &str) -> syn::Result<Vec<TemplatePiece>> {
    let text = lit.value();
    let mut out = Vec::new();
    let mut lit_buf = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit_buf.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit_buf.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!("unclosed `{{` in `{option}`: write `{{name}}` for an argument, `{{{{` for a brace"),
                    ));
                }
                let name = name.trim().to_owned();
                if name.is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!("empty `{{}}` in `{option}`: write the name of an argument, e.g. `{{id}}`"),
                    ));
                }
                if !lit_buf.is_empty() {
                    out.push(TemplatePiece::Lit(std::mem::take(&mut lit_buf)));
                }
                out.push(TemplatePiece::Arg(name));
            }
            '}' => {
                return Err(syn::Error::new(
                    lit.span(),
                    format!("unmatched `}}` in `{option}`: write `}}}}` for a literal brace"),
                ))
            }
            c => lit_buf.push(c),
        }
    }
    if !lit_buf.is_empty() {
        out.push(TemplatePiece::Lit(lit_buf));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> syn::Result<Vec<String>> {
        let lit = LitStr::new(text, Span::call_site());
        Ok(parse_template(&lit, "key")?
            .into_iter()
            .map(|p| match p {
                TemplatePiece::Lit(s) => format!("lit:{s}"),
                TemplatePiece::Arg(s) => format!("arg:{s}"),
            })
            .collect())
    }

    #[test]
    fn templates_split_into_literals_and_arguments() {
        assert_eq!(
            pieces("user:{id}:{ lang }").unwrap(),
            ["lit:user:", "arg:id", "lit::", "arg:lang"]
        );
        assert_eq!(pieces("{{x}}{a}").unwrap(), ["lit:{x}", "arg:a"]);
        assert_eq!(pieces("plain").unwrap(), ["lit:plain"]);
    }

    #[test]
    fn bad_templates_are_errors() {
        assert!(pieces("user:{id").is_err());
        assert!(pieces("user:{}").is_err());
        assert!(pieces("user}").is_err());
    }

    fn args(tokens: proc_macro2::TokenStream, kind: Kind) -> syn::Result<Args> {
        Args::from_raw(syn::parse2(tokens)?, kind)
    }

    #[test]
    fn options_are_checked() {
        use quote::quote;
        let a = args(
            quote!(region = R, expiration = 5, ignore = [a, b], key = "{c}"),
            Kind::Single,
        )
        .unwrap();
        assert!(a.region.is_some() && a.expiration.is_some());
        assert_eq!(a.ignore.len(), 2);
        assert!(args(quote!(namespace = "x"), Kind::Single).is_err());
        assert!(args(quote!(region = R, region = R), Kind::Single).is_err());
        assert!(args(
            quote!(region = R, expiration_time = 1, expiration = 2),
            Kind::Single
        )
        .is_err());
        assert!(args(quote!(region = R, asdict = true), Kind::Single).is_err());
        assert!(
            args(quote!(region = R, asdict = true), Kind::Multi)
                .unwrap()
                .asdict
        );
        assert!(args(quote!(region = R, key = "x"), Kind::Multi).is_err());
        assert!(args(quote!(region = R, namespace = 5), Kind::Single).is_err());
        assert!(args(
            quote!(region = R, key = "{a}", function_key_generator = g),
            Kind::Single
        )
        .is_err());
        assert!(args(quote!(region), Kind::Single).is_err());
        // One list of resilience options for both attributes; the multi one refuses the
        // creator timeouts by name.
        for name in RESILIENCE {
            let option: proc_macro2::TokenStream =
                format!("region = R, {name} = 0.5").parse().unwrap();
            assert!(args(option.clone(), Kind::Single).is_ok(), "{name}");
            let multi = args(option, Kind::Multi);
            match CREATOR_TIMEOUTS.contains(&name) {
                true => assert!(multi.err().unwrap().to_string().contains("cannot apply")),
                false => assert!(multi.is_ok(), "{name}"),
            }
        }
    }
}
