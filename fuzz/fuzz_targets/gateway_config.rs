//! chinwag-gateway's configuration (`Config::parse`, YAML): arbitrary text, the
//! documentation's example with arbitrary bytes inserted anywhere, and files put
//! together from the known keys with values near every rule's edge. Checks that
//! nothing panics; that a refusal names a problem; that parsing is deterministic;
//! that an accepted configuration obeys every rule the module documents (a path
//! starting with `/` without query, non-empty topics, none reserved for reply
//! channels, none both published and subscribed, distinct message types, limits
//! of at least 1 (a per-IP limit of 0 being none), a usable auth with a
//! namespace policy, approval timeouts and leeways within their bounds); that it
//! writes back to YAML that parses to the same configuration; and that a gateway
//! can be made from it (`Gateway::new` takes the checked path as a route).
#![no_main]

use arbitrary::{Result, Unstructured};
use chinwag_gateway::config::{Algorithm, Auth, Bus, KeySource, NamespacePolicy};
use chinwag_gateway::envelope::REPLY_CHANNEL_PREFIX;
use chinwag_gateway::{Authenticator, Config, Gateway, Handlers};
use std::fmt::Write as _;
use std::path::Path;

/// The example of the module's tests: the socket gateway document, with auth.
const DOCUMENT: &str = r#"
gateway:
  socket:
    path: "/connect"
    onconnect:
      publish: "socket:connection"
    onmessage:
      publish: "socket:generalMessage"
      types:
          - type: "message_type_one"
            publish: "socket:type_one"
          - type: "message_type_two"
            publish: "socket:type_two"
    onclose:
      publish: "socket:close"
    send:
      subscribe: "socket:send"
    broadcast:
      subscribe: "socket:broadcast"
  auth:
    jwt:
      algorithm: HS256
      secret_env: GATEWAY_JWT_SECRET
      namespaces_claim: namespaces
"#;

const BASE: &str = "/etc/chinwag";

/// A YAML double-quoted string. JSON's quoting is not enough: YAML reads a raw
/// U+0085, U+2028 or U+2029 as a line break (folded into a space), and other
/// characters it does not print are not allowed raw; all of them are escaped.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            ' '..='~' | '\u{A0}'..='\u{2027}' | '\u{202A}'..='\u{D7FF}' | '\u{E000}'..='\u{FEFE}' => out.push(c),
            '\u{FF00}'..='\u{FFFD}' | '\u{10000}'.. => out.push(c),
            c if u32::from(c) <= 0xFFFF => write!(out, "\\u{:04X}", u32::from(c)).unwrap(),
            c => write!(out, "\\U{:08X}", u32::from(c)).unwrap(),
        }
    }
    out.push('"');
    out
}

fn one_of<'a>(u: &mut Unstructured<'_>, pool: &[&'a str]) -> Result<String> {
    if u.ratio(1, 6)? { u.arbitrary() } else { Ok((*u.choose(pool)?).to_owned()) }
}

const TOPICS: &[&str] = &["socket:a", "socket:b", "socket:send", "socket:broadcast", "chinwag:reply:n1", "", "  "];

/// A file of known keys with values near the rules' edges.
fn assembled(u: &mut Unstructured<'_>) -> Result<String> {
    let mut y = String::from("gateway:\n");
    if u.arbitrary()? {
        let listen = one_of(u, &["127.0.0.1:4000", "0.0.0.0:9100", "[::1]:80", "localhost", "", "1.2.3.4:99999"])?;
        writeln!(y, "  listen: {}", quoted(&listen)).unwrap();
    }
    y += "  socket:\n";
    let path =
        one_of(u, &["/connect", "/", "connect", "/a b", "/x?y", "", "/ws#", "/é", "/{name}", "/a{b", "/{a}/{a}"])?;
    writeln!(y, "    path: {}", quoted(&path)).unwrap();
    for key in ["onconnect", "onclose"] {
        if u.arbitrary()? {
            writeln!(y, "    {key}:\n      publish: {}", quoted(&one_of(u, TOPICS)?)).unwrap();
            if key == "onconnect" && u.arbitrary()? {
                writeln!(y, "      approve: {}", u.arbitrary::<bool>()?).unwrap();
            }
            if key == "onconnect" && u.arbitrary()? {
                writeln!(y, "      approve_timeout_secs: {}", one_of(u, &["0", "1", "10", "3600", "3601", "-1"])?)
                    .unwrap();
            }
        }
    }
    if u.arbitrary()? {
        y += "    onmessage:\n";
        if u.arbitrary()? {
            writeln!(y, "      publish: {}", quoted(&one_of(u, TOPICS)?)).unwrap();
        }
        let types = u.int_in_range(0..=3)?;
        if types > 0 {
            y += "      types:\n";
        }
        for _ in 0..types {
            let message_type = one_of(u, &["one", "two", "", "one"])?;
            writeln!(
                y,
                "        - type: {}\n          publish: {}",
                quoted(&message_type),
                quoted(&one_of(u, TOPICS)?)
            )
            .unwrap();
        }
    }
    for key in ["send", "broadcast"] {
        if u.arbitrary()? {
            writeln!(y, "    {key}:\n      subscribe: {}", quoted(&one_of(u, TOPICS)?)).unwrap();
        }
    }
    if u.ratio(7, 8)? {
        y += "  auth:\n";
        if u.arbitrary()? {
            let algorithm = one_of(u, &["HS256", "RS256", "ES256", "none"])?;
            writeln!(y, "    jwt:\n      algorithm: {}", quoted(&algorithm)).unwrap();
            if u.arbitrary()? {
                writeln!(y, "      secret_env: {}", quoted(&one_of(u, &["SECRET", ""])?)).unwrap();
            }
            if u.arbitrary()? {
                writeln!(y, "      public_key_file: {}", quoted(&one_of(u, &["keys/jwt.pem", "", "/abs.pem"])?))
                    .unwrap();
            }
            if u.arbitrary()? {
                writeln!(y, "      public_keys_file: {}", quoted(&one_of(u, &["keys/jwks.json", ""])?)).unwrap();
            }
            if u.arbitrary()? {
                writeln!(y, "      cookie: {}", quoted(&one_of(u, &["SESSION", ""])?)).unwrap();
            }
            for key in ["audience", "issuer"] {
                if u.arbitrary()? {
                    let value = one_of(u, &["chinwag", "[a, b]", "[]", "\"\"", "[\"\"]", "7"])?;
                    writeln!(y, "      {key}: {value}").unwrap();
                }
            }
            if u.arbitrary()? {
                writeln!(y, "      leeway_secs: {}", one_of(u, &["0", "30", "300", "301", "-1"])?).unwrap();
            }
            if u.arbitrary()? {
                writeln!(y, "      namespaces_claim: {}", quoted(&one_of(u, &["namespaces", "", " "])?)).unwrap();
            }
            if u.arbitrary()? {
                writeln!(y, "      any_namespace: {}", u.arbitrary::<bool>()?).unwrap();
            }
            if u.arbitrary()? {
                writeln!(y, "      close_on_expiry: {}", u.arbitrary::<bool>()?).unwrap();
            }
        }
        if u.arbitrary()? {
            writeln!(y, "    development_usernames: {}", u.arbitrary::<bool>()?).unwrap();
        }
    }
    if u.arbitrary()? {
        let bus = one_of(u, &["in-process", "redis://127.0.0.1:6379", "redis://", "kafka://x"])?;
        writeln!(y, "  bus: {}", quoted(&bus)).unwrap();
    }
    if u.arbitrary()? {
        y += "  limits:\n";
        for key in ["max_message_size", "max_connections", "max_connections_per_ip", "message_burst"] {
            if u.arbitrary()? {
                writeln!(y, "    {key}: {}", one_of(u, &["0", "1", "5", "-1", "65536", "4294967296", "1.5"])?).unwrap();
            }
        }
        if u.arbitrary()? {
            writeln!(y, "    message_rate: {}", one_of(u, &["0", "2.5", "-1", "50", ".nan", ".inf", "1e300"])?)
                .unwrap();
        }
        if u.arbitrary()? {
            let origins: Vec<String> = (0..u.int_in_range(0..=2)?)
                .map(|_| one_of(u, &["*", "", "https://a.example"]))
                .collect::<Result<_>>()?;
            writeln!(y, "    allowed_origins: [{}]", origins.iter().map(|o| quoted(o)).collect::<Vec<_>>().join(", "))
                .unwrap();
        }
        if u.arbitrary()? {
            let ranges: Vec<String> = (0..u.int_in_range(0..=3)?)
                .map(|_| {
                    one_of(
                        u,
                        &["10.0.0.0/8", "10.0.0.1/8", "::1", "fd00::/8", "::ffff:10.0.0.0/104", "0.0.0.0/33", "", "x"],
                    )
                })
                .collect::<Result<_>>()?;
            writeln!(y, "    trusted_proxies: [{}]", ranges.iter().map(|r| quoted(r)).collect::<Vec<_>>().join(", "))
                .unwrap();
        }
    }
    if u.arbitrary()? {
        y += "  heartbeat:\n";
        for key in ["interval_secs", "timeout_secs"] {
            if u.arbitrary()? {
                writeln!(y, "    {key}: {}", one_of(u, &["0", "1", "30", "-5"])?).unwrap();
            }
        }
    }
    Ok(y)
}

/// The configuration as a file, to parse again.
fn written(config: &Config) -> String {
    let mut y = String::from("gateway:\n");
    writeln!(y, "  listen: {}", quoted(&config.listen.to_string())).unwrap();
    writeln!(y, "  socket:\n    path: {}", quoted(&config.path)).unwrap();
    let topics = &config.topics;
    if let Some(t) = &topics.on_connect {
        writeln!(y, "    onconnect:\n      publish: {}", quoted(t)).unwrap();
        if let Some(secs) = config.approve_timeout_secs {
            writeln!(y, "      approve: true\n      approve_timeout_secs: {secs}").unwrap();
        }
    }
    if let Some(t) = &topics.on_close {
        writeln!(y, "    onclose:\n      publish: {}", quoted(t)).unwrap();
    }
    y += "    onmessage:\n";
    if let Some(t) = &topics.on_message {
        writeln!(y, "      publish: {}", quoted(t)).unwrap();
    }
    y += "      types:\n";
    for route in &topics.message_types {
        writeln!(y, "        - type: {}\n          publish: {}", quoted(&route.message_type), quoted(&route.topic))
            .unwrap();
    }
    if topics.message_types.is_empty() {
        y = y.replace("      types:\n", "      types: []\n");
    }
    if let Some(t) = &config.send_topic {
        writeln!(y, "    send:\n      subscribe: {}", quoted(t)).unwrap();
    }
    if let Some(t) = &config.broadcast_topic {
        writeln!(y, "    broadcast:\n      subscribe: {}", quoted(t)).unwrap();
    }
    match &config.auth {
        Auth::DevelopmentUsernames => y += "  auth:\n    development_usernames: true\n",
        Auth::Jwt(jwt) => {
            writeln!(
                y,
                "  auth:\n    jwt:\n      algorithm: {:?}\n      cookie: {}",
                jwt.algorithm,
                quoted(&jwt.cookie)
            )
            .unwrap();
            let list =
                |names: &[String]| format!("[{}]", names.iter().map(|n| quoted(n)).collect::<Vec<_>>().join(", "));
            match &jwt.key {
                KeySource::SecretEnv(vars) => writeln!(y, "      secret_env: {}", list(vars)).unwrap(),
                KeySource::PublicKeyFile(file) => {
                    writeln!(y, "      public_key_file: {}", quoted(file.to_str().expect("made from a string")))
                        .unwrap()
                }
                KeySource::JwksFile(file) => {
                    writeln!(y, "      public_keys_file: {}", quoted(file.to_str().expect("made from a string")))
                        .unwrap()
                }
            }
            writeln!(
                y,
                "      audience: {}\n      issuer: {}\n      leeway_secs: {}\n      close_on_expiry: {}",
                list(&jwt.audiences),
                list(&jwt.issuers),
                jwt.leeway_secs,
                jwt.close_on_expiry
            )
            .unwrap();
            match &jwt.namespaces {
                Some(NamespacePolicy::Claim(claim)) => {
                    writeln!(y, "      namespaces_claim: {}", quoted(claim)).unwrap()
                }
                Some(NamespacePolicy::Any) => y += "      any_namespace: true\n",
                None => {}
            }
        }
    }
    let bus = match &config.bus {
        Bus::InProcess => "in-process".to_owned(),
        Bus::Redis(url) => url.clone(),
    };
    writeln!(y, "  bus: {}", quoted(&bus)).unwrap();
    let (rate, burst) = config.message_rate.unwrap_or((0.0, 1));
    writeln!(
        y,
        "  limits:\n    max_message_size: {}\n    max_connections: {}\n    max_connections_per_ip: {}\n    \
         message_rate: {rate:?}\n    message_burst: {burst}\n    allowed_origins: [{}]\n    trusted_proxies: [{}]",
        config.max_message_size,
        config.max_connections,
        config.max_connections_per_ip.unwrap_or(0),
        config.allowed_origins.iter().map(|o| quoted(o)).collect::<Vec<_>>().join(", "),
        config.trusted_proxies.ranges().iter().map(|r| quoted(&r.to_string())).collect::<Vec<_>>().join(", ")
    )
    .unwrap();
    writeln!(
        y,
        "  heartbeat:\n    interval_secs: {}\n    timeout_secs: {}",
        config.heartbeat_interval_secs, config.heartbeat_timeout_secs
    )
    .unwrap();
    y
}

/// Every rule the module documents, on an accepted configuration.
fn check_rules(config: &Config, text: &str) {
    let path = &config.path;
    assert!(path.starts_with('/') && !path.contains(['?', '#', ' ']), "path {path:?} accepted\n{text}");
    let topics = &config.topics;
    let published: Vec<&String> = topics
        .on_connect
        .iter()
        .chain(&topics.on_message)
        .chain(&topics.on_close)
        .chain(topics.message_types.iter().map(|t| &t.topic))
        .collect();
    let subscribed: Vec<&String> = config.send_topic.iter().chain(&config.broadcast_topic).collect();
    for topic in published.iter().chain(&subscribed) {
        assert!(!topic.trim().is_empty(), "an empty topic accepted\n{text}");
        assert!(
            !topic.starts_with(REPLY_CHANNEL_PREFIX),
            "topic {topic:?} accepted, though no configured topic may start with {REPLY_CHANNEL_PREFIX:?}\n{text}"
        );
    }
    for topic in &published {
        assert!(!subscribed.contains(topic), "{topic:?} both published and subscribed\n{text}");
    }
    if let (Some(send), Some(broadcast)) = (&config.send_topic, &config.broadcast_topic) {
        assert_ne!(send, broadcast, "send and broadcast share a topic\n{text}");
    }
    for (i, route) in topics.message_types.iter().enumerate() {
        assert!(!route.message_type.is_empty(), "an empty message type\n{text}");
        assert!(
            topics.message_types[..i].iter().all(|r| r.message_type != route.message_type),
            "type {:?} twice\n{text}",
            route.message_type
        );
    }
    assert!(config.max_message_size >= 1 && config.max_connections >= 1);
    assert!(config.max_connections_per_ip.is_none_or(|n| n >= 1), "a per-IP limit of 0 is no limit\n{text}");
    if let Some((rate, burst)) = config.message_rate {
        assert!(rate.is_finite() && rate > 0.0 && burst >= 1, "rate {rate} burst {burst}\n{text}");
    }
    assert!(config.allowed_origins.iter().all(|o| !o.is_empty()));
    assert!(config.heartbeat_interval_secs >= 1 && config.heartbeat_timeout_secs >= 1);
    if let Some(secs) = config.approve_timeout_secs {
        assert!((1..=3600).contains(&secs), "approve_timeout_secs {secs}\n{text}");
        assert!(topics.on_connect.is_some(), "approval without a connect event\n{text}");
    }
    if let Auth::Jwt(jwt) = &config.auth {
        assert!(!jwt.cookie.is_empty());
        match (&jwt.algorithm, &jwt.key) {
            (Algorithm::HS256, KeySource::SecretEnv(vars)) => {
                assert!(!vars.is_empty() && vars.iter().all(|v| !v.is_empty()))
            }
            (Algorithm::RS256 | Algorithm::ES256, KeySource::PublicKeyFile(_) | KeySource::JwksFile(_)) => {}
            (algorithm, key) => panic!("{algorithm:?} with {key:?}\n{text}"),
        }
        assert!(
            jwt.namespaces.is_some() || config.approve_timeout_secs.is_some(),
            "a JWT gateway without a namespace policy or approval\n{text}"
        );
        if let Some(NamespacePolicy::Claim(claim)) = &jwt.namespaces {
            assert!(!claim.trim().is_empty());
        }
        assert!(jwt.leeway_secs <= 300, "leeway {}\n{text}", jwt.leeway_secs);
        assert!(jwt.audiences.iter().chain(&jwt.issuers).all(|n| !n.trim().is_empty()));
    }
    if let Bus::Redis(url) = &config.bus {
        assert!(url.starts_with("redis://") && url.len() > "redis://".len());
    }
}

fn check(text: &str) {
    let base = Path::new(BASE);
    let result = Config::parse(text, base);
    assert_eq!(result, Config::parse(text, base), "parsing is deterministic");
    let config = match result {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.problem.is_empty() && !e.to_string().is_empty(), "a refusal names its problem");
            return;
        }
    };
    check_rules(&config, text);
    let again = written(&config);
    assert_eq!(Config::parse(&again, base).as_ref(), Ok(&config), "written back:\n{again}\nfrom:\n{text}");
    // The gateway takes the checked path as its route (in this build a Redis bus
    // is refused, as documented; so is approval with the in-process bus and no
    // connect handler).
    if let Err(e) = Gateway::new(config.clone(), Authenticator::DevelopmentUsernames, Handlers::new()) {
        let approval_in_process = config.approve_timeout_secs.is_some() && config.bus == Bus::InProcess;
        assert!(
            matches!(config.bus, Bus::Redis(_)) || approval_in_process,
            "Gateway::new refused a checked configuration: {e}"
        );
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => check(&String::from_utf8_lossy(rest)),
        1 => {
            // The example with bytes inserted: the first two bytes say where.
            let (at, insert) = match rest {
                [a, b, insert @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) % (DOCUMENT.len() + 1), insert),
                _ => (0, rest),
            };
            let mut text = DOCUMENT.to_owned();
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text.insert_str(at, &String::from_utf8_lossy(insert));
            check(&text);
        }
        _ => {
            if let Ok(text) = assembled(&mut Unstructured::new(rest)) {
                check(&text);
            }
        }
    }
});
