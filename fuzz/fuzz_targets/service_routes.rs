//! chinwag-service's path patterns and query parsing. A pattern is accepted
//! exactly when it has the documented shape (a `/`, then segments that are either
//! literal or one whole `{name}`, each name once); a path built from an accepted
//! pattern, with arbitrary parameter values percent-encoded, matches it and gives
//! the values back in pattern order; any path matched has one value per
//! parameter; a path of another segment count does not match. Query pairs
//! encoded as a form come back from `query_pairs` in order, and `query_param` finds
//! the first value of a name.
#![no_main]

use chinwag_service::{PathPattern, query_pairs, query_param};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// The input as text, line by line: a pattern, a path to match against it, a
/// query string, a parameter name to look up; then one line per value, which
/// gives the parameters of a path made for the pattern (in turn) and, split at
/// its first tab, a name and value pair of a query made as a form.
struct Input {
    pattern: String,
    raw_path: String,
    raw_query: String,
    name: String,
    values: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl Input {
    fn read(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.split('\n').map(str::to_owned);
        let mut next = || lines.next().unwrap_or_default();
        let (pattern, raw_path, raw_query, name) = (next(), next(), next(), next());
        let values: Vec<String> = lines.collect();
        let pairs = values
            .iter()
            .map(|v| v.split_once('\t').map_or((v.clone(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Self { pattern, raw_path, raw_query, name, values, pairs }
    }
}

/// The documented shape of a pattern, written from the documentation.
fn valid(pattern: &str) -> Option<Vec<(bool, String)>> {
    let rest = pattern.strip_prefix('/')?;
    let mut segments: Vec<(bool, String)> = Vec::new();
    for part in rest.split('/') {
        let has_braces = part.contains(['{', '}']);
        let param = part.len() >= 3 && part.starts_with('{') && part.ends_with('}') && {
            let inner = &part[1..part.len() - 1];
            !inner.contains(['{', '}'])
        };
        if param {
            let name = part[1..part.len() - 1].to_owned();
            if segments.iter().any(|(p, n)| *p && *n == name) {
                return None;
            }
            segments.push((true, name));
        } else if has_braces {
            return None;
        } else {
            segments.push((false, part.to_owned()));
        }
    }
    Some(segments)
}

fn check_pattern(pattern: &str, input: &Input) {
    let model = valid(pattern);
    let parsed = PathPattern::new(pattern);
    assert_eq!(parsed.is_ok(), model.is_some(), "{pattern:?}: {parsed:?}");
    let (Ok(parsed), Some(segments)) = (parsed, model) else { return };

    // A path made for the pattern matches it and gives the values back.
    let mut path = String::new();
    let mut expected = Vec::new();
    for (i, (param, text)) in segments.iter().enumerate() {
        path.push('/');
        if *param {
            let value = match input.values.get(i % input.values.len().max(1)) {
                Some(v) if !v.is_empty() => v.clone(),
                _ => format!("v{i}"),
            };
            path += &utf8_percent_encode(&value, NON_ALPHANUMERIC).to_string();
            expected.push((text.clone(), value));
        } else {
            path += text;
        }
    }
    let params = match parsed.matches(&path) {
        Some(Ok(params)) => params,
        other => panic!("{pattern:?} does not match {path:?}, made for it: {other:?}"),
    };
    let got: Vec<(String, String)> = params.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
    assert_eq!(got, expected, "{pattern:?} matching {path:?}");
    for (name, value) in &expected {
        assert_eq!(params.get(name), Some(value.as_str()));
    }
    // One more segment, or one fewer: no match.
    assert!(parsed.matches(&format!("{path}/x")).is_none(), "{pattern:?} matched a longer path");
    if let Some((shorter, _)) = path.rsplit_once('/')
        && !shorter.is_empty()
    {
        assert!(parsed.matches(shorter).is_none(), "{pattern:?} matched a shorter path {shorter:?}");
    }

    // Any path: a match has one value per parameter, none empty.
    if let Some(Ok(params)) = parsed.matches(&input.raw_path) {
        let names: Vec<&str> = segments.iter().filter(|(p, _)| *p).map(|(_, n)| n.as_str()).collect();
        let got: Vec<&str> = params.iter().map(|(n, _)| n).collect();
        assert_eq!(got, names, "{pattern:?} matching {:?}", input.raw_path);
        assert_eq!(input.raw_path.split('/').count(), segments.len() + 1);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let input = Input::read(data);
    check_pattern(&input.pattern, &input);
    // The same pattern with every segment a parameter named after it, and with
    // every segment literal: shapes a random pattern rarely has.
    let as_params: Vec<String> = input.pattern.split('/').skip(1).map(|s| format!("{{{s}}}")).collect();
    check_pattern(&format!("/{}", as_params.join("/")), &input);
    let literal: String = input.pattern.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    check_pattern(&literal, &input);

    // Pairs encoded as a form come back as they were.
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &input.pairs {
        form.append_pair(k, v);
    }
    let query = form.finish();
    let decoded: Vec<(String, String)> = query_pairs(&query).collect();
    assert_eq!(decoded, input.pairs, "{query:?}");
    let first = input.pairs.iter().find(|(k, _)| *k == input.name).map(|(_, v)| v.as_str());
    assert_eq!(query_param(Some(&query), &input.name).as_deref(), first, "{query:?}");

    // Any query: query_param agrees with query_pairs.
    let first = query_pairs(&input.raw_query).find(|(k, _)| *k == input.name).map(|(_, v)| v);
    assert_eq!(query_param(Some(&input.raw_query), &input.name).map(|v| v.into_owned()), first);
    assert_eq!(query_param(None, &input.name), None);
});
