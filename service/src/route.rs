//! Path patterns with parameters (`/chat/{name}`), and query parameters.

use std::borrow::Cow;

/// A path pattern: literal segments and `{name}` parameters, for example
/// `/chat/{name}`. A parameter matches one whole, non-empty segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A pattern that is not of the form `/literal/{param}/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPattern(pub String);

impl std::fmt::Display for InvalidPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid path pattern {:?}: it must start with / and name each parameter once", self.0)
    }
}

impl std::error::Error for InvalidPattern {}

/// The parameters a path matched, percent-decoded, in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// All parameters.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Why a path that has the pattern's shape cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam(pub String);

impl PathPattern {
    /// Parses a pattern such as `/chat/{name}`.
    pub fn new(pattern: &str) -> Result<Self, InvalidPattern> {
        let invalid = || InvalidPattern(pattern.to_owned());
        let rest = pattern.strip_prefix('/').ok_or_else(invalid)?;
        let mut segments = Vec::new();
        for part in rest.split('/') {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !name.is_empty() && !name.contains(['{', '}']) => Segment::Param(name.to_owned()),
                Some(_) => return Err(invalid()),
                None if part.contains(['{', '}']) => return Err(invalid()),
                None => Segment::Literal(part.to_owned()),
            };
            if let Segment::Param(name) = &segment
                && segments.iter().any(|s| matches!(s, Segment::Param(n) if n == name))
            {
                return Err(invalid());
            }
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// Matches a request path (still percent-encoded). `None` if it does not have
    /// the pattern's shape; an error if a parameter does not decode to UTF-8.
    pub fn matches(&self, path: &str) -> Option<Result<Params, BadParam>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => match percent_encoding::percent_decode_str(part).decode_utf8() {
                    Ok(value) => params.push((name.clone(), value.into_owned())),
                    Err(_) => return Some(Err(BadParam(format!("the {name} in the path is not valid UTF-8")))),
                },
            }
        }
        Some(Ok(Params(params)))
    }
}

/// The first value of a query parameter, decoded (`application/x-www-form-urlencoded`:
/// `+` is a space).
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    form_urlencoded::parse(query?.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value)
}

/// Every `name=value` pair of a query string, decoded, in order.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = PathPattern::new("/chat/{name}").unwrap();
        let params = p.matches("/chat/Ann%20Lee").unwrap().unwrap();
        assert_eq!(params.get("name"), Some("Ann Lee"));
        assert_eq!(p.matches("/chat/"), None);
        assert_eq!(p.matches("/chat/a/b"), None);
        assert_eq!(p.matches("/other/a"), None);
        assert!(p.matches("/chat/%FF").unwrap().is_err());
        assert_eq!(p.matches("/chat/a%2Fb").unwrap().unwrap().get("name"), Some("a/b"));
        for bad in ["chat", "/{a}/{a}", "/{}", "/x{y}"] {
            assert!(PathPattern::new(bad).is_err(), "{bad}");
        }
        assert!(PathPattern::new("/").unwrap().matches("/").is_some());
    }

    #[test]
    fn queries() {
        assert_eq!(query_param(Some("age=20&x=1"), "age").as_deref(), Some("20"));
        assert_eq!(query_param(Some("q=a+b%21"), "q").as_deref(), Some("a b!"));
        assert_eq!(query_param(Some("x=1"), "age"), None);
        assert_eq!(query_param(None, "age"), None);
        assert_eq!(query_param(Some("age="), "age").as_deref(), Some(""));
    }
}
