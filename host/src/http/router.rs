//! Route patterns: literal segments, one `{name}` segment (the object name,
//! percent-decoded) and a final `*` matching any rest.

use crate::config::RouteConfig;
use crate::error::ConfigError;

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(String),
    Name,
    Rest,
}

/// What a route does.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Deliver to object `(class, {name})`.
    Object {
        /// The class.
        class: String,
        /// Names longer than this (in chars) get 404 unless a unique id.
        max_name_chars: Option<usize>,
    },
    /// Mint a unique id for this class.
    UniqueId(String),
    /// Serve a built-in page.
    Page(String),
}

/// One compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    method: Option<String>,
    segments: Vec<Segment>,
    /// What it does.
    pub target: Target,
}

/// The outcome of matching a request.
#[derive(Debug, PartialEq)]
pub enum Match<'r> {
    /// A route matched; `name` is the decoded `{name}` segment if any, and
    /// `rest` what the route's final `*` matched (raw; `""` without one).
    Found(&'r Target, Option<String>, String),
    /// A route's path matched but not its method.
    WrongMethod,
    /// Nothing matched.
    NotFound,
}

/// The routes, in order.
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Compiles the configured routes.
    pub fn new(routes: &[RouteConfig]) -> Result<Router, ConfigError> {
        let mut out = Vec::new();
        for r in routes {
            let segments = parse(&r.path)?;
            let target = match (&r.object, &r.unique_id, &r.page) {
                (Some(c), None, None) => Target::Object {
                    class: c.clone(),
                    max_name_chars: r.max_name_chars,
                },
                (None, Some(c), None) => Target::UniqueId(c.clone()),
                (None, None, Some(p)) => Target::Page(p.clone()),
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "route {:?}: set exactly one of object, unique_id, page",
                        r.path
                    )));
                }
            };
            out.push(Route {
                method: r.method.as_ref().map(|m| m.to_ascii_uppercase()),
                segments,
                target,
            });
        }
        Ok(Router { routes: out })
    }

    /// Finds the route for a method and path.
    pub fn find(&self, method: &str, path: &str) -> Match<'_> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut wrong_method = false;
        for route in &self.routes {
            let Some((name, rest)) = matches(&route.segments, &parts) else {
                continue;
            };
            if route.method.as_deref().is_some_and(|m| m != method) {
                wrong_method = true;
                continue;
            }
            return Match::Found(&route.target, name, rest);
        }
        if wrong_method {
            Match::WrongMethod
        } else {
            Match::NotFound
        }
    }
}

fn parse(pattern: &str) -> Result<Vec<Segment>, ConfigError> {
    if !pattern.starts_with('/') {
        return Err(ConfigError::Invalid(format!(
            "route {pattern:?}: must start with '/'"
        )));
    }
    let raw: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let mut segments = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let seg = match *s {
            "{name}" => Segment::Name,
            "*" if i + 1 == raw.len() => Segment::Rest,
            "*" => {
                return Err(ConfigError::Invalid(format!(
                    "route {pattern:?}: '*' must be last"
                )));
            }
            lit => Segment::Literal(lit.to_string()),
        };
        segments.push(seg);
    }
    Ok(segments)
}

/// Matches path parts; returns the decoded name (`None` when the pattern
/// has none) and the parts the final `*` matched, joined by `/`.
fn matches(segments: &[Segment], parts: &[&str]) -> Option<(Option<String>, String)> {
    let mut name = None;
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            Segment::Rest => return Some((name, parts.get(i..).unwrap_or(&[]).join("/"))),
            Segment::Literal(l) => {
                if parts.get(i) != Some(&l.as_str()) {
                    return None;
                }
            }
            Segment::Name => {
                let raw = parts.get(i)?;
                if raw.is_empty() {
                    return None;
                }
                name = Some(
                    percent_encoding::percent_decode_str(raw)
                        .decode_utf8()
                        .ok()?
                        .into_owned(),
                );
            }
        }
    }
    (parts.len() == segments.len()).then_some((name, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_routes;

    #[test]
    fn the_chat_routes_match_like_the_demo() {
        let r = Router::new(&default_routes()).expect("routes compile");
        assert!(matches!(
            r.find("GET", "/"),
            Match::Found(Target::Page(_), None, _)
        ));
        assert!(matches!(
            r.find("POST", "/api/room"),
            Match::Found(Target::UniqueId(_), None, _)
        ));
        assert_eq!(r.find("GET", "/api/room"), Match::WrongMethod);
        match r.find("GET", "/api/room/l%C3%B6bby/websocket") {
            Match::Found(Target::Object { class, .. }, Some(name), rest) => {
                assert_eq!(class, "chat-room");
                assert_eq!(name, "löbby");
                assert_eq!(rest, "websocket");
            }
            other => panic!("{other:?}"),
        }
        // The rest is what `*` matched, even where the name repeats the
        // route's own words.
        match r.find("GET", "/api/room/room/api/room/x") {
            Match::Found(_, Some(name), rest) => {
                assert_eq!((name.as_str(), rest.as_str()), ("room", "api/room/x"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.find("GET", "/nope"), Match::NotFound);
        assert_eq!(r.find("GET", "/api/room//websocket"), Match::NotFound);
    }
}
