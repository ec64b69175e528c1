//! AuthorizationPolicy sets: 1–4 policies in the workload's namespace, the root namespace or
//! elsewhere, selecting the workload or not, ALLOW or DENY, some dry-run; rules built from
//! the vocabularies below. Nearly everything generated is valid (Istio's webhook and
//! peerguard's parser accept it); a few policies carry one value the webhook refuses, to
//! check that peerguard stays fail-closed where istiod would skip the value.

use super::rng::Rng;
use super::{DST_NET, DST_OTHER, DST_PAIR};
use serde_json::{json, Map, Value};

const PRINCIPALS: &[&str] = &[
    "cluster.local/ns/foo/sa/sleep",
    "cluster.local/ns/bar/sa/admin",
    "cluster.local/ns/foo/*",
    "cluster.local/ns/bar/sa/*",
    "*/ns/bar/sa/admin",
    "*/sa/sleep",
    "*",
    "other.td/ns/bar/sa/admin",
    "other.td/*",
    "clus*/ns/foo/sa/sleep",
    "*local/ns/foo/sa/sleep",
    "cluster.local/ns/foo/sa/sleep-*",
    "*sleep-v2",
    "cluster.local/ns/foo/sa/sleep/extra",
    "*/ns/Foo/sa/Sleep",
    "cluster.local/ns/qux/sa/sleep",
];
const NAMESPACES: &[&str] = &[
    "foo",
    "bar",
    "baz-*",
    "*-prod",
    "*",
    "f*o",
    "istio-system",
    "qux",
    "Foo",
];
const SERVICE_ACCOUNTS: &[&str] = &[
    "sleep",
    "foo/sleep",
    "bar/admin",
    "baz-prod/sleep-v2",
    "admin",
];
const TRUST_DOMAINS: &[&str] = &["cluster.local", "other.td", "*.td", "cluster*", "*"];
const IP_BLOCKS: &[&str] = &[
    "127.10.0.1",
    "127.10.0.0/16",
    "127.10.1.0/24",
    "127.20.0.0/16",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "127.10.0.7/16",
    "127.10.0.2/32",
    "127.0.0.1",
    "::1",
    "::/0",
];
const DEST_IPS: &[&str] = &[DST_PAIR, DST_NET, DST_OTHER, "127.0.0.0/8", "10.0.0.0/8"];
const PORTS: &[&str] = &["8080", "8081", "9000", "1234"];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "get", "G*", "*T", "*", "HEAD", "PURGE",
];
const HOSTS: &[&str] = &[
    "app.foo",
    "app.foo:*",
    "APP.FOO",
    "*.foo",
    "app.*",
    "*",
    "app.foo:8080",
    "other.host",
    "*:8080",
    "127.0.0.1*",
];
const PATHS: &[&str] = &[
    "/admin",
    "/admin/*",
    "/admin*",
    "*/public",
    "/public/x",
    "*",
    "/api/{*}/data",
    "/api/{**}",
    "/{*}/admin",
    "/admin/{**}/x",
    "/a%2Fb",
    "/api/v1",
    "/public/*",
    "/x/{*}",
    "/{**}",
    "/api/{*}",
    "/",
    "*.b",
];
/// `request.headers[...]` keys and the values conditions on them use.
const HEADER_CONDITIONS: &[(&str, &[&str])] = &[
    (
        "x-role",
        &["admin", "user", "ad*", "*in", "*", "Admin", "admin,user"],
    ),
    ("X-Role", &["admin", "user", "*"]),
    ("x-token", &["secret", "s*", "*"]),
    ("host", &["app.foo", "app.foo:8080", "*", "app*"]),
    (
        "x-forwarded-for",
        &["127.10.0.1", "*127.10.0.1", "10.1.2.3*", "*"],
    ),
    (":authority", &["app.foo", "app.foo:8080", "*", "APP*"]),
    (":path", &["/admin*", "*", "/public/x"]),
    (":method", &["GET", "get", "P*"]),
    ("cookie", &["a=1", "*a=1"]),
];
const SNIS: &[&str] = &[
    "peerguard-e2e.local",
    "*.local",
    "other.example",
    "*",
    "peerguard-*",
];
const REQUEST_PRINCIPALS: &[&str] = &[
    "https://issuer.example/user",
    "*",
    "https://issuer.example/*",
];

/// Values found in a set's policies, for the request generator to reuse.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    /// (header name as written in the key, values).
    pub headers: Vec<(String, Vec<String>)>,
}

impl Hints {
    pub fn of(docs: &[Value]) -> Hints {
        let mut h = Hints::default();
        for d in docs {
            walk(d, &mut h);
        }
        h
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn walk(v: &Value, h: &mut Hints) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match k.as_str() {
                    "paths" | "notPaths" => h.paths.extend(strings(val)),
                    "hosts" | "notHosts" => h.hosts.extend(strings(val)),
                    _ => {}
                }
            }
            if let Some(name) = m
                .get("key")
                .and_then(Value::as_str)
                .and_then(|k| k.strip_prefix("request.headers["))
                .and_then(|k| k.strip_suffix(']'))
            {
                let mut values = m.get("values").map(strings).unwrap_or_default();
                values.extend(m.get("notValues").map(strings).unwrap_or_default());
                h.headers.push((name.to_string(), values));
            }
            m.values().for_each(|val| walk(val, h));
        }
        Value::Array(a) => a.iter().for_each(|val| walk(val, h)),
        _ => {}
    }
}

/// 1–4 policy documents.
pub fn policy_set(rng: &mut Rng) -> Vec<Value> {
    let n = rng.range(1, 4);
    (0..n).map(|i| policy(rng, i)).collect()
}

fn policy(rng: &mut Rng, i: usize) -> Value {
    let namespace = match rng.below(20) {
        0..=14 => "foo",
        15..=17 => "istio-system",
        _ => "bar",
    };
    let mut metadata = json!({"name": format!("p{i}"), "namespace": namespace});
    match rng.below(20) {
        0 | 1 => metadata["annotations"] = json!({"istio.io/dry-run": "true"}),
        2 => metadata["annotations"] = json!({"istio.io/dry-run": "yes"}),
        _ => {}
    }
    let mut spec = Map::new();
    match rng.below(10) {
        0..=5 => {}
        6..=8 => {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {"app": "httpbin"}}),
            );
        }
        9 if rng.chance(15) => {
            // Not a label value Kubernetes or Istio accept.
            spec.insert("selector".into(), json!({"matchLabels": {"app": "*"}}));
        }
        _ => {
            spec.insert("selector".into(), json!({"matchLabels": {"app": "other"}}));
        }
    }
    let deny = rng.chance(50);
    if deny {
        spec.insert("action".into(), json!("DENY"));
    } else if rng.chance(20) {
        spec.insert("action".into(), json!("ALLOW"));
    }
    // ALLOW without rules is allow-nothing; DENY needs rules (webhook).
    if deny || !rng.chance(8) {
        let mut rules: Vec<Value> = (0..rng.range(1, 3)).map(|_| rule(rng)).collect();
        if rng.chance(4) {
            // Now and then something the webhook would refuse: peerguard fails closed,
            // istiod skips it (compare::KNOWN_SAFER).
            rules.push(invalid_rule(rng));
        }
        spec.insert("rules".into(), Value::Array(rules));
    }
    if deny && rng.chance(1) {
        spec.remove("rules");
    }
    json!({
        "apiVersion": if rng.chance(50) { "security.istio.io/v1" } else { "security.istio.io/v1beta1" },
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": spec,
    })
}

/// Removes the JWT attributes (`requestPrincipals`, `notRequestPrincipals`,
/// `request.auth.*` conditions) from an AuthorizationPolicy, and the `from` entries and
/// lists they leave empty (a rule left with nothing matches every request, as written).
pub fn strip_jwt(doc: &mut Value) {
    let Some(rules) = doc.pointer_mut("/spec/rules").and_then(Value::as_array_mut) else {
        return;
    };
    for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(from) = rule.get_mut("from").and_then(Value::as_array_mut) {
            for f in from.iter_mut() {
                if let Some(src) = f.get_mut("source").and_then(Value::as_object_mut) {
                    src.remove("requestPrincipals");
                    src.remove("notRequestPrincipals");
                }
            }
            from.retain(|f| f["source"].as_object().is_some_and(|s| !s.is_empty()));
        }
        if let Some(when) = rule.get_mut("when").and_then(Value::as_array_mut) {
            when.retain(|c| {
                !c["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("request.auth."))
            });
        }
        for key in ["from", "when"] {
            if rule
                .get(key)
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                rule.remove(key);
            }
        }
    }
}

fn list(rng: &mut Rng, pool: &[&str], max: usize) -> Value {
    let n = rng.range(1, max);
    Value::Array(
        rng.pick_some(pool, n)
            .into_iter()
            .map(|s| json!(s))
            .collect(),
    )
}

fn rule(rng: &mut Rng) -> Value {
    if rng.chance(6) {
        return json!({});
    }
    let mut r = Map::new();
    if rng.chance(50) {
        let from: Vec<Value> = (0..rng.range(1, 2))
            .map(|_| json!({"source": source(rng)}))
            .collect();
        r.insert("from".into(), Value::Array(from));
    }
    if rng.chance(60) {
        let to: Vec<Value> = (0..rng.range(1, 2))
            .map(|_| json!({"operation": operation(rng)}))
            .collect();
        r.insert("to".into(), Value::Array(to));
    }
    if rng.chance(35) || r.is_empty() {
        let when: Vec<Value> = (0..rng.range(1, 2)).map(|_| condition(rng)).collect();
        r.insert("when".into(), Value::Array(when));
    }
    Value::Object(r)
}

/// A rule with one value Istio's webhook refuses.
fn invalid_rule(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!({"from": [{"source": {"ipBlocks": ["10.0.0.0/33", "127.10.0.1"]}}]}),
        1 => json!({"to": [{"operation": {"ports": ["http"], "paths": ["/admin*"]}}]}),
        2 => json!({"when": [{"key": "destination.name", "values": ["httpbin"]}]}),
        3 => json!({"when": [{"key": "source.ip", "notValues": ["127.10.0.300"]}]}),
        // (Not a bad path template: Envoy would refuse the whole configuration.)
        _ => json!({"to": [{"operation": {"ports": ["70000"]}}]}),
    }
}

fn source(rng: &mut Rng) -> Value {
    let mut s = Map::new();
    let fields = rng.range(1, 2);
    let use_accounts = rng.chance(12);
    for _ in 0..fields {
        let (name, pool, max): (&str, &[&str], usize) = match rng.below(20) {
            0..=3 if !use_accounts => ("principals", PRINCIPALS, 3),
            4 | 5 if !use_accounts => ("notPrincipals", PRINCIPALS, 2),
            6..=8 if !use_accounts => ("namespaces", NAMESPACES, 2),
            9 if !use_accounts => ("notNamespaces", NAMESPACES, 2),
            0..=9 => (
                if rng.chance(70) {
                    "serviceAccounts"
                } else {
                    "notServiceAccounts"
                },
                SERVICE_ACCOUNTS,
                2,
            ),
            10 | 11 => ("ipBlocks", IP_BLOCKS, 2),
            12 => ("notIpBlocks", IP_BLOCKS, 2),
            13 | 14 => ("remoteIpBlocks", IP_BLOCKS, 2),
            15 => ("notRemoteIpBlocks", IP_BLOCKS, 2),
            16 => ("trustDomains", TRUST_DOMAINS, 2),
            17 => ("notTrustDomains", TRUST_DOMAINS, 1),
            18 => ("requestPrincipals", REQUEST_PRINCIPALS, 1),
            _ => ("notRequestPrincipals", REQUEST_PRINCIPALS, 1),
        };
        s.insert(name.into(), list(rng, pool, max));
    }
    Value::Object(s)
}

fn operation(rng: &mut Rng) -> Value {
    let mut o = Map::new();
    for _ in 0..rng.range(1, 2) {
        let (name, pool, max): (&str, &[&str], usize) = match rng.below(16) {
            0..=3 => ("paths", PATHS, 3),
            4 | 5 => ("notPaths", PATHS, 2),
            6 | 7 => ("methods", METHODS, 2),
            8 => ("notMethods", METHODS, 2),
            9 | 10 => ("hosts", HOSTS, 2),
            11 => ("notHosts", HOSTS, 2),
            12 | 13 => ("ports", PORTS, 2),
            _ => ("notPorts", PORTS, 1),
        };
        o.insert(name.into(), list(rng, pool, max));
    }
    Value::Object(o)
}

fn condition(rng: &mut Rng) -> Value {
    let (key, pool): (String, &[&str]) = match rng.below(20) {
        0..=6 => {
            let (name, values) = rng.pick(HEADER_CONDITIONS);
            (format!("request.headers[{name}]"), values)
        }
        7 | 8 => ("source.ip".into(), IP_BLOCKS),
        9 | 10 => ("remote.ip".into(), IP_BLOCKS),
        11 => ("destination.ip".into(), DEST_IPS),
        12 | 13 => ("destination.port".into(), PORTS),
        14 | 15 => ("source.principal".into(), PRINCIPALS),
        16 => ("source.namespace".into(), NAMESPACES),
        17 => ("connection.sni".into(), SNIS),
        18 => ("source.serviceAccount".into(), SERVICE_ACCOUNTS),
        _ => ("request.auth.principal".into(), REQUEST_PRINCIPALS),
    };
    let mut c = json!({"key": key});
    match rng.below(10) {
        0..=5 => c["values"] = list(rng, pool, 2),
        6..=8 => c["notValues"] = list(rng, pool, 2),
        _ => {
            c["values"] = list(rng, pool, 2);
            c["notValues"] = list(rng, pool, 1);
        }
    }
    c
}
