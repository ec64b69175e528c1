use super::*;

fn parse(text: &str) -> Result<Scenario, LoadError> {
    parse_scenario(text, Path::new("case.yaml"))
}

const BASE: &str = "name: x\nworkload: {namespace: foo, name: w, service_account: w}\n";

#[test]
fn errors_name_the_file_and_field() {
    let cases = [
            (format!("{BASE}requests:\n- {{peer: null, port: 80, protocol: htp, expect: allow}}\n"), "requests[0].protocol"),
            (format!("{BASE}requests:\n- {{peer: null, port: 80, protocol: tcp, expect: maybe}}\n"), "requests[0].expect"),
            (format!("{BASE}requests:\n- {{peer: null, port: 80, protocol: tcp, expect: allow, bogus: 1}}\n"), "bogus"),
            (format!("{BASE}requests:\n- {{peer: null, port: 80, protocol: http, expect: allow}}\n"), "requests[0].http"),
            (
                format!("{BASE}requests:\n- {{peer: {{principal: a/b, expired: true}}, port: 80, protocol: tcp, expect: deny}}\n"),
                "requests[0].e2e_only",
            ),
            ("workload: {namespace: foo, name: w, service_account: w}\nrequests: []\n".to_string(), "name"),
        ];
    for (text, field) in cases {
        let e = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("case.yaml: ") && e.contains(field),
            "{field}: {e}"
        );
    }
}

#[test]
fn requests_convert() {
    let text = format!(
            "{BASE}requests:\n\
             - {{peer: {{principal: cluster.local/ns/a/sa/b}}, source_ip: 127.0.0.2, port: 80, protocol: http, http: {{method: GET, path: /, host: h, headers: {{X-A: v}}}}, expect: allow, expect_dry_run: {{deny: denied}}}}\n\
             - {{peer: null, port: 9000, protocol: tcp, expect: deny}}\n\
             - {{peer: {{uri_san: [a, b]}}, port: 1, protocol: tcp, expect: deny, e2e_only: true}}\n"
        );
    let s = parse(&text).unwrap();
    assert_eq!(s.trust_domain, "cluster.local");
    assert_eq!(s.root_namespace, "istio-system");
    let r = s.requests[0].to_request().unwrap();
    assert_eq!(
        r.peer.unwrap().uri_sans,
        vec!["spiffe://cluster.local/ns/a/sa/b"]
    );
    assert_eq!(
        r.http.unwrap().headers,
        vec![("x-a".to_string(), "v".to_string())]
    );
    assert!(s.requests[1].to_request().unwrap().http.is_none());
    assert!(s.requests[2].to_request().is_none());
    assert_eq!(
        s.requests[2].peer.as_ref().unwrap().uri_sans(),
        vec!["a", "b"]
    );

    let mut d = Decision::deny(Reason::NoAllowMatched);
    let m = s.requests[0].check(&d);
    assert!(
        m[0].starts_with("expected allow, got deny (reason: "),
        "{m:?}"
    );
    assert!(m[1].contains("dry-run deny: denied"), "{m:?}");
    d.allowed = true;
    d.dry_run.deny = Some(ShadowResult::Denied);
    assert!(s.requests[0].check(&d).is_empty());
}
